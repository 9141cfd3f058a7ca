"""Test helpers shared by keras_ersm's own tests (not part of the public API).

`test_case` runs the checks every layer and model gets (config round trip,
symbolic and eager call, a fit step, mixed precision, `.keras` saving);
`fixtures/` holds `.keras` files written by earlier versions, loaded by
`compatibility_test.py`.
"""
