#include <stdio.h>
#include <string.h>

#include "plait/core.h"

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        printf("usage: plait <command> [flags]\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "plait: error: unknown command '%s' (see plait --help)\n", argv[1]);
    return 2;
}
