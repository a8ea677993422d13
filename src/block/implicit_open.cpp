// The implicit-open policy (see implicit_open.h).
#include "block/implicit_open.h"
#include "block/driver.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <optional>

namespace qimg {
namespace {

std::optional<ImplicitOpen> g_override;

std::optional<std::string> real(const std::string &p) {
    char buf[PATH_MAX];
    if (!::realpath(p.c_str(), buf)) return std::nullopt;
    return std::string(buf);
}

std::string dir_of(const std::string &path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

bool has_dotdot(const std::string &name) {
    size_t start = 0;
    while (start <= name.size()) {
        size_t end = name.find('/', start);
        if (end == std::string::npos) end = name.size();
        if (name.compare(start, end - start, "..") == 0 && end - start == 2) return true;
        start = end + 1;
    }
    return false;
}

// A name that selects a protocol by prefix ("nbd:...", "http://...") or
// is a json: description: neither is a file in a directory.
bool names_protocol(const std::string &name) { return protocol_prefix(name).has_value(); }

Error refused(ImplicitOpen policy, const ImplicitName &n, const std::string &why) {
    return make_error(EACCES, "Not opening '" + n.resolved + "', the " + n.what + " that '" + n.image +
                                  "' names: " + why + " (implicit-open policy '" +
                                  std::string(implicit_open_name(policy)) + "')");
}

}  // namespace

Result<ImplicitOpen> parse_implicit_open(std::string_view s) {
    if (s == "follow") return ImplicitOpen::Follow;
    if (s == "confined") return ImplicitOpen::Confined;
    if (s == "none") return ImplicitOpen::None;
    return make_error(EINVAL, "Invalid implicit-open policy '" + std::string(s) +
                                  "' (expected 'follow', 'confined' or 'none')");
}

std::string_view implicit_open_name(ImplicitOpen p) {
    switch (p) {
    case ImplicitOpen::Follow: return "follow";
    case ImplicitOpen::Confined: return "confined";
    case ImplicitOpen::None: return "none";
    }
    return "follow";
}

void set_implicit_open_policy(ImplicitOpen p) { g_override = p; }

Result<ImplicitOpen> implicit_open_policy() {
    if (g_override) return *g_override;
    const char *env = std::getenv("QIMG_IMPLICIT_OPEN");
    if (!env || !*env) return ImplicitOpen::Follow;
    auto p = parse_implicit_open(env);
    if (!p) return Err(p.error().prepended("QIMG_IMPLICIT_OPEN: "));
    return p;
}

Result<void> check_implicit_open(ImplicitOpen policy, const ImplicitName &n) {
    switch (policy) {
    case ImplicitOpen::Follow:
        return ok();
    case ImplicitOpen::None:
        return Err(refused(policy, n, "images may not name files to open"));
    case ImplicitOpen::Confined:
        break;
    }
    const std::string &rec = n.recorded;
    if (rec.rfind("json:", 0) == 0 || (names_protocol(rec) && rec.rfind("file:", 0) != 0) ||
        names_protocol(n.resolved))
        return Err(refused(policy, n, "not a file name"));
    std::string path = rec.rfind("file:", 0) == 0 ? rec.substr(5) : rec;
    if (!path.empty() && path[0] == '/') return Err(refused(policy, n, "an absolute name"));
    if (has_dotdot(path)) return Err(refused(policy, n, "a name with '..'"));
    // The naming image must itself be a file whose directory is known.
    auto image_dir = real(dir_of(n.image));
    if (n.image.rfind("json:", 0) == 0 || names_protocol(n.image) || !image_dir)
        return Err(refused(policy, n, "the image is not in a directory"));
    auto target = real(n.resolved);
    if (!target) return ok();  // does not exist: the open fails as it would anyway
    const std::string &dir = *image_dir;
    const bool inside = dir == "/" ? true : target->rfind(dir + "/", 0) == 0;
    if (!inside) return Err(refused(policy, n, "outside the image's directory"));
    struct stat st;
    if (::stat(target->c_str(), &st) != 0 || !S_ISREG(st.st_mode))
        return Err(refused(policy, n, "not a regular file"));
    return ok();
}

}  // namespace qimg
