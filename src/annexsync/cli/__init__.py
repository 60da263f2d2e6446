"""annexsync.cli"""
