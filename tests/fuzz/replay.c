/* Standalone driver for a fuzz harness when libFuzzer is not linked: feeds each file named
 * on the command line to LLVMFuzzerTestOneInput once. Used by ctest to replay the corpus on
 * every build, under the sanitizers when KM_SANITIZE is set. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz.h"

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        /* Corpus files are small; cap at 1 MiB like libFuzzer's default -max_len region. */
        size_t cap = 1u << 20;
        uint8_t *buf = malloc(cap);
        if (buf == NULL) {
            fclose(f);
            return 1;
        }
        size_t n = fread(buf, 1, cap, f);
        fclose(f);
        (void)LLVMFuzzerTestOneInput(buf, n);
        free(buf);
        printf("replayed %s (%zu bytes)\n", argv[i], n);
    }
    return 0;
}
