#include "platform/log.h"
int main(void)
{
    cstl_log(CSTL_LOG_INFO, "main", "constellation %s", CSTL_VERSION);
    return 0;
}
