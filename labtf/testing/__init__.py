"""Test doubles for labtf's tests and benchmarks (not used by the library itself).

fakeserver.py   FakeServer: loopback image-search APIs and image hosts, misbehaving on request
planted.py      planted near-duplicate variants and pair precision/recall against the truth
"""
