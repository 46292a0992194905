// Proves that the public header compiles as C99 on its own (built with -std=c99 -Werror).
#include "sdg.h"

int main(void)
{
    sdg_error err = {SDG_OK, ""};
    (void)err;
    return 0;
}
