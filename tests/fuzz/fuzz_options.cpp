// libFuzzer target for the text parsers of src/util: sizes, QemuOpts lists,
// keyval/--object, json: filenames, --image-opts and the JSON writer. The
// input is fed to each parser whole; the only property checked beyond "no
// crash, no sanitizer report" is that what parse_qemu_json accepts, the
// writer prints, and the printed text parses back to the same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "util/json_filename.h"
#include "util/keyval.h"
#include "crypto/secret.h"
#include "util/qjson.h"
#include "util/size.h"

namespace {

// A "-0" number token in JSON text (not -0.5, -0e1 or -01).
bool has_negative_zero(std::string_view text) {
    for (size_t at = text.find("-0"); at != std::string_view::npos; at = text.find("-0", at + 1)) {
        const size_t next = at + 2;
        if (next == text.size()) return true;
        const char c = text[next];
        if (!(c >= '0' && c <= '9') && c != '.' && c != 'e' && c != 'E') return true;
    }
    return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string_view in(reinterpret_cast<const char *>(data), size);
    using namespace qimg;

    std::string warning;
    (void)parse_size(in, 'B', &warning);
    (void)parse_size(in, 'M');
    (void)cvtnum("image size", in);
    if (size >= 8) {
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | data[i];
        (void)size_to_str(v);
    }

    std::vector<std::string> warnings;
    (void)parse_opts(in, {}, &warnings);
    (void)parse_opts(in, "file");
    (void)has_help_option(in);
    (void)accumulate_options("a=1", in);
    (void)parse_bool_opt("x", in);
    (void)parse_size_opt("size", in);
    (void)parse_number_opt("n", in);

    bool help = false;
    (void)keyval_parse(in, "qom-type", &help);
    if (auto obj = parse_object(in)) {
        (void)object_help(*obj);
        // secret_value() may read a file named by the input; only exercise
        // the in-memory forms.
        if (obj->qom_type == "secret" && !obj->props.count("file")) (void)secret_value(*obj);
    }

    (void)parse_json_filename(std::string("json:").append(in));
    if (auto opts = parse_image_opts(in, &warnings)) (void)extract_prefix(*opts, "file");

    if (auto j = parse_qemu_json(in)) {
        const std::string pretty = to_qemu_json(*j);
        const std::string compact = to_qemu_json(*j, false, false);
        // Doubles print with %.17g and round-trip; inf (from "1e400") prints
        // as a word QEMU cannot read back, as in QEMU itself; -0.0 prints as
        // "-0", which reads back as the integer 0 (QEMU's writer and parser
        // do the same), so the text changes once.
        auto back = parse_qemu_json(compact);
        if (!back) {
            if (compact.find("inf") == std::string::npos) std::abort();
        } else if (to_qemu_json(*back, false, false) != compact && !has_negative_zero(compact)) {
            std::abort();
        }
        (void)pretty;
        (void)flatten_json_options(*j);
    }
    return 0;
}
