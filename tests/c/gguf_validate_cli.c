/* Test driver for native/src/gguf_validate.c: validates each path given, one line each:
 * "<code> <offset> <field>" (field last: it is printable ASCII without tabs or newlines),
 * then the message on the next line. Exit status: 0 if every file passed, 1 otherwise. */
#include <stdio.h>

#include "gguf_validate.h"

int main(int argc, char **argv) {
    int i, bad = 0;
    for (i = 1; i < argc; i++) {
        fe_gguf_error err;
        int rc = fe_gguf_validate_file(argv[i], &err);
        if (rc == FE_GGUF_OK) {
            printf("0 -1 -\nok\n");
        } else {
            printf("%d %lld %s\n%s\n", rc, err.offset, err.field, err.message);
            bad = 1;
        }
    }
    return bad;
}
