"""annexsync.util"""
