"""annexsync.assistant: the daemon — small named services under one supervisor."""
