// Unit tests of the LUKS crypto layer (src/crypto) and the luks format.
#include <gtest/gtest.h>
