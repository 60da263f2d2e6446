"""annexsync.policy"""
