"""annexsync.git"""
