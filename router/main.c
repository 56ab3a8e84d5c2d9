/* kv-router: placeholder until the service issue lands. */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "kv-router: not yet implemented\n");
    return 2;
}
