/* The single keymesh executable. Everything is in the CLI dispatcher. */
#include "core/daemon/cli.h"

int main(int argc, char **argv)
{
    return km_cli_main(argc, argv);
}
