/* quadc driver placeholder until the subcommands land. */
#include <stdio.h>
int main(void)
{
    puts("quadc");
    return 0;
}
