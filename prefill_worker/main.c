/* kv-prefill: placeholder until the service issue lands. */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "kv-prefill: not yet implemented\n");
    return 2;
}
