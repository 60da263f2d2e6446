"""annexsync-shell: the restricted entry point that serves one repository over ssh."""
