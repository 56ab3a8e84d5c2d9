# CMake generated Testfile for 
# Source directory: /work/main
# Build directory: /work/main/build
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
subdirs("common")
subdirs("kernels")
subdirs("kvctl")
subdirs("router")
subdirs("prefill_worker")
subdirs("decode_worker")
subdirs("bench")
subdirs("tests")
