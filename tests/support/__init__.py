"""Helpers the tests share: configs and data files, the fake server's scripted replies, records and runs."""
