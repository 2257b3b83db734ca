"""Helpers of the tests (not tests): the Lipschitz probe, explicit operator matrices, the
float16 rounding analysis, and the scripts that the scale-out and resume tests run in a
fresh interpreter."""
