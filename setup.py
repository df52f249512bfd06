# The C core is built by cffi (out-of-line API mode); the build script lives
# beside the C source, as in argon2-cffi.
from setuptools import setup

setup(cffi_modules=["csrc/build_ipvs_core.py:ffibuilder"])
