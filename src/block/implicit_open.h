// Which files an image may make qimg open: the policy for names an image
// records itself (a qcow2 backing file or data file, later vmdk extents),
// as opposed to names the user gives (the command line, --image-opts,
// json: options). Every such "implicit" open goes through
// BlockOpener::open_child (block/open.h), which asks check_implicit_open()
// first, so a format driver cannot bypass it.
//
//   follow    qemu-img's behaviour (the default): any path, device or
//             protocol the image names is opened.
//   confined  only regular files inside the naming image's own directory:
//             no absolute names, no ".." components, no protocol prefixes
//             or json: names, nothing that resolves (symlinks included)
//             outside that directory, no devices or FIFOs.
//   none      nothing an image names is opened; backing and data files
//             only where the user names them (backing.file.filename=...,
//             data-file.filename=..., rebase/create -b).
//
// Chosen by the environment variable QIMG_IMPLICIT_OPEN (for services that
// run qemu-img from scripts they cannot change) or the global option
// `--implicit-open=POLICY` before the subcommand, which wins.
#pragma once

#include <string>
#include <string_view>

#include "util/result.h"

namespace qimg {

enum class ImplicitOpen { Follow, Confined, None };

Result<ImplicitOpen> parse_implicit_open(std::string_view s);
std::string_view implicit_open_name(ImplicitOpen p);

// The process-wide policy: set_implicit_open_policy() if called (the CLI's
// option), else QIMG_IMPLICIT_OPEN, else Follow. An invalid environment
// value is an error for every open rather than a silent fallback.
Result<ImplicitOpen> implicit_open_policy();
void set_implicit_open_policy(ImplicitOpen p);

// What an image names and where it is to be opened from.
struct ImplicitName {
    std::string image;     // the naming image's file name, as opened
    std::string recorded;  // the name as the image records it
    std::string resolved;  // what would be opened (recorded combined with the image's directory, for backing files)
    std::string what;      // "backing file", "data file", "extent file"...
};

// ok() when `policy` allows opening `n.resolved`; otherwise EACCES with a
// message that names the file, the image and the policy.
Result<void> check_implicit_open(ImplicitOpen policy, const ImplicitName &n);

}  // namespace qimg
