// Shared by the image fuzz targets: each input becomes the content of one
// temp file per process (opened by path, as the CLI opens images).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace qimg::fuzz {

// Rewrites the process's temp file named after `tag` with the input and
// returns its path, or "" if it cannot be written.
inline std::string input_file(const char *tag, const uint8_t *data, size_t size) {
    static std::string path = [tag] {
        std::string t = std::string("/tmp/") + tag + "_XXXXXX";
        int fd = mkstemp(t.data());
        if (fd >= 0) close(fd);
        return t;
    }();
    FILE *f = std::fopen(path.c_str(), "wb");
    if (!f) return {};
    bool ok = std::fwrite(data, 1, size, f) == size;
    ok = std::fclose(f) == 0 && ok;
    return ok ? path : std::string();
}

}  // namespace qimg::fuzz
