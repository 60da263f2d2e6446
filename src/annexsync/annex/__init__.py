"""annexsync.annex"""
