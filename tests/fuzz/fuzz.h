/* The libFuzzer entry point every harness in this folder defines. */
#ifndef KM_TESTS_FUZZ_H
#define KM_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
