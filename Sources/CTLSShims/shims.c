/* The module needs one translation unit; the shims are inline in the header. */
#include "CTLSShims.h"
