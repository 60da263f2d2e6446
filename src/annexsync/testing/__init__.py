"""annexsync.testing"""
