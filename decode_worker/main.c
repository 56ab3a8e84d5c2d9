/* kv-decode: placeholder until the service issue lands. */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "kv-decode: not yet implemented\n");
    return 2;
}
