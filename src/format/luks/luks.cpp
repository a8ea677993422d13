// The luks format: a LUKS1 volume (cryptsetup's on-disk format, "LUKS On-Disk
// Format Specification" version 1.2.3) in a file, as QEMU's block/crypto.c
// and crypto/block-luks.c read and write it: the header and 8 key slots in
// the first sectors, the encrypted guest data from payload_offset, each
// 512-byte sector encrypted with its own IV counted from the payload start.
// The header and key layer live in src/crypto (shared with qcow2's LUKS
// encryption); this folder only maps guest requests to payload sectors.
//
// Concurrency: the node holds the payload cipher (immutable, usable from
// any thread: src/crypto/sector_cipher.h) and the header (immutable). Whole
// sector requests run concurrently; a request that is not sector-aligned
// reads, merges and rewrites its head and tail sectors under rmw_mu_ so two
// such requests sharing a sector do not lose each other's bytes.
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "block/driver.h"
#include "block/open.h"
#include "block/perm.h"
#include "block/status.h"
#include "crypto/luks_header.h"
#include "crypto/luks_keys.h"
#include "crypto/sector_cipher.h"
#include "util/checked.h"
#include "util/keyval.h"

namespace qimg {
namespace {

using crypto::kLuksSectorSize;
constexpr uint64_t kSector = kLuksSectorSize;

class LuksNode final : public BlockNode {
public:
    LuksNode(NodePtr file, crypto::LuksHeader h, std::shared_ptr<const crypto::SectorCipher> cipher,
             std::string master_key, const SecretStore *secrets, Perms file_perms)
        : header_(std::move(h)), cipher_(std::move(cipher)), master_key_(std::move(master_key)), secrets_(secrets),
          file_perms_(file_perms) {
        file_ = std::move(file);
    }

    std::string_view driver_name() const override { return "luks"; }

    // QEMU's block_crypto_co_getlength, in whole sectors as its block layer
    // counts them.
    uint64_t length() const override {
        const uint64_t f = file_->length(), p = header_.payload_offset();
        if (f <= p) return 0;
        return (f - p + kSector - 1) / kSector * kSector;
    }

    bool encrypted() const override { return true; }
    uint32_t request_alignment() const override { return uint32_t(kSector); }
    bool has_zero_init() const override { return false; }
    bool unallocated_reads_zero() const override { return false; }

    Result<void> read(uint64_t off, void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        if (!cipher_) return make_error(EPERM, "Cannot read an image opened without its key");
        if (len == 0) return ok();
        const uint64_t a0 = off / kSector * kSector, a1 = (off + len + kSector - 1) / kSector * kSector;
        if (a0 == off && a1 == off + len) return read_sectors(off, static_cast<uint8_t *>(buf), len);
        std::vector<uint8_t> tmp(a1 - a0);
        QIMG_TRY(read_sectors(a0, tmp.data(), tmp.size()));
        std::memcpy(buf, tmp.data() + (off - a0), len);
        return ok();
    }

    Result<void> write(uint64_t off, const void *buf, size_t len) override {
        QIMG_TRY(check_range(off, len));
        if (!cipher_) return make_error(EPERM, "Cannot write an image opened without its key");
        if (len == 0) return ok();
        const uint64_t a0 = off / kSector * kSector, a1 = (off + len + kSector - 1) / kSector * kSector;
        std::vector<uint8_t> tmp(a1 - a0);
        if (a0 == off && a1 == off + len) {
            std::memcpy(tmp.data(), buf, len);
            return write_sectors(a0, tmp.data(), tmp.size());
        }
        // Read-modify-write of the partial head and tail sectors.
        std::lock_guard g(rmw_mu_);
        QIMG_TRY(read_sectors(a0, tmp.data(), kSector));
        if (a1 - a0 > kSector) QIMG_TRY(read_sectors(a1 - kSector, tmp.data() + (a1 - a0 - kSector), kSector));
        std::memcpy(tmp.data() + (off - a0), buf, len);
        return write_sectors(a0, tmp.data(), tmp.size());
    }

    // Zeroes are encrypted like any data: the generic fallback writes them.
    Result<void> discard(uint64_t, uint64_t) override { return ok(); }

    Result<void> flush() override { return file_->flush(); }

    // QEMU's block_crypto_co_truncate: the file follows, payload offset added.
    Result<void> truncate(uint64_t new_size, Prealloc prealloc, bool exact) override {
        auto end = checked_add(header_.payload_offset(), new_size);
        if (!end) return make_error(EFBIG, "Image size too large");
        return file_->truncate(*end, prealloc, exact);
    }

    // As QEMU's crypto driver: data everywhere, at no offset a reader could use.
    Result<BlockStatus> block_status(uint64_t, uint64_t len) override { return unmapped_data_status(len); }

    nlohmann::ordered_json specific_info() const override {
        const nlohmann::ordered_json j = crypto::luks_info_json(header_);
        // qemu-img's order (its QDict's) for the luks block.
        nlohmann::ordered_json data;
        for (const char *k : {"ivgen-alg", "hash-alg", "cipher-alg", "uuid", "ivgen-hash-alg", "cipher-mode", "slots",
                              "payload-offset", "master-key-iters"})
            if (j.contains(k)) data[k] = j[k];
        nlohmann::ordered_json out;
        out["type"] = "luks";
        out["data"] = data;
        return out;
    }

    // qcrypto_block_luks_amend_options(): add or erase keyslots (the slot
    // logic and its crash-safe write order are src/crypto/luks_keys').
    Result<void> amend(const std::map<std::string, std::string> &o, bool force, const AmendStatus &) override {
        QIMG_ASSIGN(crypto::LuksAmendParams p, crypto::luks_amend_params(o, "", force));
        if (!cipher_) return make_error(EPERM, "Parameter 'key-secret' is required for cipher");
        // block_crypto_amend_prepare(): while keys change, the file is
        // written by us alone and read by no one else (a running QEMU that
        // has the image open makes this fail with its lock message).
        Perms updating = file_perms_;
        updating.perm |= kPermWrite;
        updating.shared &= uint8_t(~(kPermConsistentRead | kPermWrite));
        QIMG_TRY(file_->set_perm(updating));
        crypto::LuksVolumeIo vol{
            header_,
            master_key_,
            [&](uint64_t off, void *buf, size_t len) { return read_padded(*file_, off, buf, len); },
            [&](uint64_t off, const void *buf, size_t len) { return file_->write(off, buf, len); },
            [&] { return file_->flush(); },
            [&](std::string_view id) { return secrets_->lookup_utf8(id); },
        };
        Result<void> r = crypto::luks_amend_keyslots(vol, p);
        // block_crypto_amend_cleanup(): the open's permissions again.
        if (auto back = file_->set_perm(file_perms_); !back && r) return back;
        return r;
    }

private:
    Result<void> check_range(uint64_t off, uint64_t len) const {
        const uint64_t size = length();
        if (off > size || len > size - off) return make_error(EIO, "Request beyond the end of the image");
        return ok();
    }

    // Whole sectors at guest offset `off` (sector-aligned).
    Result<void> read_sectors(uint64_t off, uint8_t *buf, size_t len) {
        QIMG_TRY(read_padded(*file_, header_.payload_offset() + off, buf, len));
        return cipher_->decrypt(off / kSector, buf, len);
    }

    Result<void> write_sectors(uint64_t off, uint8_t *buf, size_t len) {
        QIMG_TRY(cipher_->encrypt(off / kSector, buf, len));
        return file_->write(header_.payload_offset() + off, buf, len);
    }

    crypto::LuksHeader header_;  // changed only by amend, which runs alone
    const std::shared_ptr<const crypto::SectorCipher> cipher_;  // null when opened without I/O
    const std::string master_key_;  // empty when opened without I/O
    const SecretStore *secrets_;
    const Perms file_perms_;  // what the open took on file_, as block/open.cpp's file_perms()
    std::mutex rmw_mu_;
};

int luks_probe(std::span<const uint8_t> head, const std::string &) { return crypto::is_luks_header(head) ? 100 : 0; }

Result<crypto::LuksHeader> read_header(BlockNode &file) {
    std::vector<uint8_t> buf(crypto::kLuksHeaderSize);
    if (file.length() < buf.size()) return make_error(EINVAL, "LUKS header truncated");
    QIMG_TRY(read_padded(file, 0, buf.data(), buf.size()));
    return crypto::parse_luks_header(buf);
}

Result<NodePtr> luks_open(OpenRequest &req) {
    std::optional<std::string> key_secret;
    if (auto it = req.options.find("key-secret"); it != req.options.end()) {
        key_secret = it->second;
        req.options.erase(it);
    }
    // qcrypto_block_luks_open(): without NO_IO the passphrase comes first.
    std::string passphrase;
    if (!req.flags.no_io) {
        if (!key_secret) return make_error(EINVAL, "Parameter 'key-secret' is required for cipher");
        QIMG_ASSIGN(passphrase, req.secrets->lookup_utf8(*key_secret));
    }
    QIMG_ASSIGN(crypto::LuksHeader h, read_header(*req.file));
    std::shared_ptr<const crypto::SectorCipher> cipher;
    std::string master_key;
    if (!req.flags.no_io) {
        BlockNode &file = *req.file;
        const uint64_t file_len = file.length();
        auto reader = [&](uint64_t off, void *buf, size_t len) -> Result<void> {
            // Key material past the end of the file is a damaged volume.
            if (off > file_len || len > file_len - off)
                return make_error(EINVAL, "LUKS key material lies beyond the end of the file");
            return file.read(off, buf, len);
        };
        QIMG_ASSIGN(master_key, crypto::luks_unlock(h, passphrase, reader));
        auto c = crypto::SectorCipher::make(crypto::luks_cipher_spec(h), master_key);
        if (!c) return Err(c.error());
        cipher = *c;
    }
    const OpenFlags &f = req.flags;
    Perms file_perms = child_perms(kRoleImage, f.perms.value_or(root_perms(f.read_write, f.no_io, f.resize, f.no_share)),
                                   f.read_write, f.no_io);
    if (f.force_share) file_perms.shared = kPermAll;
    return NodePtr(std::make_shared<LuksNode>(req.file, std::move(h), std::move(cipher), std::move(master_key),
                                              req.secrets, file_perms));
}

Result<void> luks_create_file(CreateRequest &req, const crypto::LuksCreateParams &params);

// As QEMU's block_crypto_co_create_opts_luks: a failure after the file was
// made (a missing or bad secret) deletes it again (bdrv_co_delete_file,
// which only host files have).
Result<void> luks_create(CreateRequest &req) {
    QIMG_ASSIGN(crypto::LuksCreateParams params, crypto::luks_create_params(req.options, ""));
    CreateRequest proto;
    proto.filename = req.filename;
    proto.options = req.options;
    for (const char *k : {"key-secret", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg", "hash-alg",
                          "iter-time", "size", "preallocation"})
        proto.options.erase(k);
    proto.options["preallocation"] = "off";
    proto.secrets = req.secrets;
    QIMG_TRY(req.opener->create_protocol(proto));
    Result<void> r = luks_create_file(req, params);
    if (!r && !protocol_prefix(req.filename)) std::remove(req.filename.c_str());
    return r;
}

Result<void> luks_create_file(CreateRequest &req, const crypto::LuksCreateParams &params) {
    if (!req.has("key-secret")) return make_error(EINVAL, "Parameter 'key-secret' is required for cipher");
    QIMG_ASSIGN(std::string passphrase, req.secrets->lookup_utf8(req.get("key-secret")));
    QIMG_ASSIGN(Prealloc prealloc, parse_prealloc(req.get("preallocation", "off")));
    QIMG_ASSIGN(crypto::LuksVolume v, crypto::luks_format(params, passphrase));

    OpenFlags flags;
    flags.read_write = true;
    flags.resize = true;
    QIMG_ASSIGN(NodePtr file, req.opener->open_protocol(req.filename, {}, flags));
    auto end = checked_add(v.header.payload_offset(), req.size);
    if (!end) return make_error(EFBIG, "Image size too large");
    QIMG_TRY(file->truncate(*end, prealloc, true));
    // Key material first, then the header that makes the slot active.
    const uint64_t slot0 = uint64_t{v.header.key_slots[0].key_offset_sector} * kSector;
    QIMG_TRY(file->write(slot0, v.slot0_material.data(), v.slot0_material.size()));
    QIMG_TRY(file->flush());
    QIMG_TRY(file->write(0, v.header_bytes.data(), v.header_bytes.size()));
    std::fill(v.master_key.begin(), v.master_key.end(), '\0');
    return file->flush();
}

// QEMU's block_crypto_measure: the header area (the payload offset for
// these options) plus the virtual size; the secret must exist, as QEMU
// builds the header to know its size.
Result<MeasureInfo> luks_measure(MeasureRequest &req) {
    QIMG_ASSIGN(crypto::LuksCreateParams p, crypto::luks_create_params(req.options, ""));
    if (!req.has("key-secret")) return make_error(EINVAL, "Parameter 'key-secret' is required for cipher");
    QIMG_TRY(req.secrets->lookup_utf8(req.get("key-secret")));
    uint32_t key_len = crypto::cipher_key_len(p.cipher_alg);
    if (p.cipher_mode == "xts") key_len *= 2;
    crypto::LuksHeader h;
    h.master_key_len = key_len;
    const uint64_t header_sectors = crypto::kLuksKeySlotOffset / kSector;
    const uint64_t payload = (header_sectors + crypto::kLuksNumKeySlots * h.key_material_sectors(crypto::kLuksStripes)) * kSector;
    uint64_t size = 0;
    if (req.source) {
        size = req.source->length();
    } else {
        size = std::strtoull(req.get("size", "0").c_str(), nullptr, 10);
    }
    MeasureInfo info;
    auto required = checked_add(payload, size / kSector * kSector + (size % kSector ? kSector : 0));
    if (!required) return make_error(EFBIG, "Image size too large");
    info.required = *required;
    info.fully_allocated = info.required;
    return info;
}

const Driver *make_luks_driver() {
    static Driver d = [] {
        Driver d;
        d.name = "luks";
        d.probe = luks_probe;
        d.open = luks_open;
        d.create = luks_create;
        d.measure = luks_measure;
        d.strong_options = {"key-secret"};
        d.amend_options = {
            {"state", CreateOption::Type::String, "Select new state of affected keyslots (active/inactive)", ""},
            {"keyslot", CreateOption::Type::Number, "Select a single keyslot to modify explicitly", ""},
            {"old-secret", CreateOption::Type::String, "Select all keyslots that match this password", ""},
            {"new-secret", CreateOption::Type::String,
             "New secret to set in the matching keyslots. Empty string to erase", ""},
            {"iter-time", CreateOption::Type::Number, "Time to spend in PBKDF in milliseconds", ""},
        };
        using T = CreateOption::Type;
        d.create_options = {
            {"size", T::Size, "Virtual disk size", ""},
            {"key-secret", T::String, "ID of the secret that provides the keyslot passphrase", ""},
            {"cipher-alg", T::String, "Name of encryption cipher algorithm", ""},
            {"cipher-mode", T::String, "Name of encryption cipher mode", ""},
            {"ivgen-alg", T::String, "Name of IV generator algorithm", ""},
            {"ivgen-hash-alg", T::String, "Name of IV generator hash algorithm", ""},
            {"hash-alg", T::String, "Name of encryption hash algorithm", ""},
            {"iter-time", T::Number, "Time to spend in PBKDF in milliseconds", ""},
        };
        return d;
    }();
    return &d;
}

}  // namespace

QIMG_REGISTER_DRIVER(make_luks_driver);

}  // namespace qimg
