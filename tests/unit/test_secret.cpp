// SecretStore (util/secret.h): loading secrets as QEMU completes secret
// objects, and lookups by id.
#include <gtest/gtest.h>

#include <cstdio>
#include <unistd.h>

#include "util/keyval.h"
#include "crypto/secret.h"

namespace qimg {
namespace {

ObjectSpec object_ok(std::string_view s) {
    auto r = parse_object(s);
    EXPECT_TRUE(r) << s << ": " << (r ? "" : r.error().message);
    return r ? *r : ObjectSpec{};
}

std::string temp_file(const std::string &contents) {
    char name[] = "/tmp/qimg-secret-XXXXXX";
    int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    if (fd >= 0) {
        EXPECT_EQ(write(fd, contents.data(), contents.size()), static_cast<ssize_t>(contents.size()));
        close(fd);
    }
    return name;
}

TEST(SecretValue, DataFileAndBase64) {
    EXPECT_EQ(*secret_value(object_ok("secret,id=s0,data=x")), "x");
    EXPECT_EQ(*secret_value(object_ok("secret,id=s0,data=eA==,format=base64")), "x");
    EXPECT_EQ(*secret_value(object_ok("secret,id=s0,data=eA=,format=base64")), "");  // incomplete group dropped
    EXPECT_EQ(*secret_value(object_ok("secret,id=s0,data=e,format=base64")), "");
    EXPECT_EQ(*secret_value(object_ok("secret,id=s0,data=cGFzc3dvcmQ=,format=base64")), "password");
    auto bad = secret_value(object_ok("secret,id=s0,data=!!,format=base64"));
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message, "Base64 data contains invalid characters");

    const std::string f = temp_file("filesecret");
    EXPECT_EQ(*secret_value(object_ok("secret,id=s0,file=" + f)), "filesecret");
    const std::string g = temp_file("cGFz\nc3dvcmQ=\n");
    EXPECT_EQ(*secret_value(object_ok("secret,id=s0,format=base64,file=" + g)), "password");
    const std::string h = temp_file(std::string("eA==\0", 5));
    auto nul = secret_value(object_ok("secret,id=s0,format=base64,file=" + h));
    ASSERT_FALSE(nul);
    EXPECT_EQ(nul.error().message, "Base64 data contains embedded NUL characters");
    std::remove(f.c_str());
    std::remove(g.c_str());
    std::remove(h.c_str());

    auto missing = secret_value(object_ok("secret,id=s0,file=/nonexistent/qimg"));
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().message,
              "Unable to read /nonexistent/qimg: Failed to open file \u201c/nonexistent/qimg\u201d: "
              "No such file or directory");
    auto dir = secret_value(object_ok("secret,id=s0,file=/tmp"));
    ASSERT_FALSE(dir);
    EXPECT_EQ(dir.error().message, "Unable to read /tmp: Error reading file \u201c/tmp\u201d: Is a directory");
    auto keyid = secret_value(object_ok("secret,id=s0,data=eA==,format=base64,keyid=k"));
    ASSERT_FALSE(keyid);
    EXPECT_EQ(keyid.error().message, "No secret with id 'k'");
}

TEST(SecretStore, IdsAndLookups) {
    SecretStore store;
    ASSERT_TRUE(store.add(object_ok("secret,id=s0,data=pass")));
    EXPECT_EQ(*store.lookup("s0"), "pass");
    EXPECT_EQ(*store.lookup_utf8("s0"), "pass");
    auto dup = store.add(object_ok("secret,id=s0,data=other"));
    ASSERT_FALSE(dup);
    EXPECT_EQ(dup.error().message, "attempt to add duplicate property 's0' to object (type 'container')");
    EXPECT_EQ(*store.lookup("s0"), "pass");

    ASSERT_TRUE(store.add(object_ok("throttle-group,id=t0")));
    EXPECT_EQ(store.lookup("t0").error().message, "Object with id 't0' is not a secret");
    EXPECT_EQ(store.lookup("nope").error().message, "No secret with id 'nope'");

    // A failed secret is not kept: its id can be defined again.
    EXPECT_FALSE(store.add(object_ok("secret,id=s1,file=/nonexistent/qimg")));
    EXPECT_EQ(store.lookup("s1").error().message, "No secret with id 's1'");
    ASSERT_TRUE(store.add(object_ok("secret,id=s1,data=/w==,format=base64")));
    EXPECT_EQ(*store.lookup("s1"), "\xff");
    EXPECT_EQ(store.lookup_utf8("s1").error().message, "Data from secret s1 is not valid UTF-8");
    ASSERT_TRUE(store.add(object_ok("secret,id=s2,data=w4k=,format=base64")));  // U+00C9
    EXPECT_TRUE(store.lookup_utf8("s2"));
    ASSERT_TRUE(store.add(object_ok("secret,id=s3,data=AA==,format=base64")));  // NUL
    EXPECT_FALSE(store.lookup_utf8("s3"));
    ASSERT_TRUE(store.add(object_ok("secret,id=s4,data=7aCA,format=base64")));  // a surrogate
    EXPECT_FALSE(store.lookup_utf8("s4"));
}

TEST(SecretStore, KeyidChecksInQemuOrder) {
    SecretStore store;
    auto self = store.add(object_ok("secret,id=s0,data=x,keyid=s0"));
    ASSERT_FALSE(self);
    EXPECT_EQ(self.error().message, "Secret with id 's0' has no data");
    ASSERT_TRUE(store.add(object_ok("secret,id=short,data=abc")));
    ASSERT_TRUE(store.add(object_ok("secret,id=k,data=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,format=base64")));
    auto msg = [&](const char *spec) {
        auto r = store.load(object_ok(spec));
        EXPECT_FALSE(r) << spec;
        return r ? std::string() : r.error().message;
    };
    EXPECT_EQ(msg("secret,id=a,data=x,keyid=short"), "Key should be 32 bytes in length");
    EXPECT_EQ(msg("secret,id=a,data=x,keyid=k"), "IV is required to decrypt secret");
    EXPECT_EQ(msg("secret,id=a,data=x,keyid=k,iv=AAAA"), "IV should be 16 bytes in length not 3");
    EXPECT_EQ(msg("secret,id=a,data=x,keyid=k,iv=AAAAAAAAAAAAAAAAAAAAAA=="),
              "Length 1 must be a multiple of block size 16");
    EXPECT_EQ(msg("secret,id=a,data=!,format=base64,keyid=k,iv=AAAAAAAAAAAAAAAAAAAAAA=="),
              "Base64 data contains invalid characters");
}

// AES-256-CBC vectors from `openssl enc -aes-256-cbc` with the key
// "0123456789abcdef0123456789abcdef" and the IV "fedcba9876543210".
TEST(Secret, KeyidDecryptsAndDropsPadding) {
    SecretStore store;
    ASSERT_TRUE(store.add(object_ok("secret,id=k,data=0123456789abcdef0123456789abcdef")));
    const std::string iv = ",keyid=k,iv=ZmVkY2JhOTg3NjU0MzIxMA==";
    auto load = [&](const std::string &data) { return store.load(object_ok("secret,id=a,data=" + data + ",format=base64" + iv)); };
    auto plain = load("Agcyiky1Hq9ku0Y8VmSiSg==");  // "hunter2", PKCS#7
    ASSERT_TRUE(plain) << plain.error().message;
    EXPECT_EQ(*plain, "hunter2");
    // Only the last byte counts: "hunter2" + nine 0x01 keeps eight of them.
    auto loose = load("chfP+5mc0/zuXPH+QwxabQ==");
    ASSERT_TRUE(loose);
    EXPECT_EQ(*loose, std::string("hunter2") + std::string(8, '\x01'));
    auto over = load("yQWeyYM0woroW05NcppW4Q==");  // last byte 0x20
    ASSERT_FALSE(over);
    EXPECT_EQ(over.error().message, "Incorrect number of padding bytes (32) found on decrypted data");
    auto empty = store.load(object_ok("secret,id=a,data=" + iv));
    ASSERT_FALSE(empty);
    EXPECT_EQ(empty.error().message, "Incorrect number of padding bytes (0) found on decrypted data");
    // Decrypted bytes that are not UTF-8 fail only where UTF-8 is needed.
    ASSERT_TRUE(store.add(object_ok("secret,id=bin,data=v6R1+aG0uYQt40LqoUAlkg==,format=base64" + iv)));
    EXPECT_TRUE(store.lookup("bin"));
    auto utf8 = store.lookup_utf8("bin");
    ASSERT_FALSE(utf8);
    EXPECT_EQ(utf8.error().message, "Data from secret bin is not valid UTF-8");
}

}  // namespace
}  // namespace qimg
