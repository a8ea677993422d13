// Project-wide error type and Result<T>, the return type of every fallible
// operation below the CLI. A hand-written stand-in for std::expected: the
// only libFuzzer in Debian 12 is clang 14, which cannot compile libstdc++ 12's
// <expected> (it needs C++20 concepts at __cpp_concepts >= 202002), and the
// fuzz targets must build the same sources as the tool.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace qimg {

// An error carries an errno-style code (for callers that branch on it, and
// for strerror-style suffixes) and a complete human message in qemu-img's
// wording, e.g. "Could not open 'x': No such file or directory".
struct Error {
    int code = EIO;
    std::string message;
    // QEMU's error_append_hint(): text some commands print verbatim after
    // the message (qemu-img create); usually empty.
    std::string hint;

    // Returns a copy whose message is `prefix + message`, as QEMU's
    // error_prepend() does when an error travels up a layer.
    Error prepended(std::string_view prefix) const {
        Error e = *this;
        e.message.insert(0, prefix);
        return e;
    }
};

inline Error make_error(int code, std::string message) { return Error{code, std::move(message)}; }
inline Error make_error(std::string message) { return Error{EINVAL, std::move(message)}; }
// "<what>: <strerror(code)>"
inline Error errno_error(int code, std::string_view what) {
    std::string m(what);
    m += ": ";
    m += std::strerror(code);
    return Error{code, std::move(m)};
}

// Lets `return Err(e);` and `return make_error(...)` both convert.
struct Unexpected {
    Error error;
};
inline Unexpected Err(Error e) { return Unexpected{std::move(e)}; }

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}
    Result(Unexpected u) : v_(std::in_place_index<1>, std::move(u.error)) {}
    template <class U>
        requires(std::is_convertible_v<U &&, T> && !std::is_same_v<std::decay_t<U>, T> &&
                 !std::is_same_v<std::decay_t<U>, Error> && !std::is_same_v<std::decay_t<U>, Unexpected>)
    Result(U &&u) : v_(std::in_place_index<0>, T(std::forward<U>(u))) {}

    bool has_value() const { return v_.index() == 0; }
    explicit operator bool() const { return has_value(); }
    T &value() & { return std::get<0>(v_); }
    const T &value() const & { return std::get<0>(v_); }
    T &&value() && { return std::get<0>(std::move(v_)); }
    T &operator*() & { return value(); }
    const T &operator*() const & { return value(); }
    T &&operator*() && { return std::move(*this).value(); }
    T *operator->() { return &value(); }
    const T *operator->() const { return &value(); }
    const Error &error() const { return std::get<1>(v_); }
    Error &error() { return std::get<1>(v_); }
    template <class U>
    T value_or(U &&dflt) const & {
        return has_value() ? value() : static_cast<T>(std::forward<U>(dflt));
    }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error e) : err_(std::move(e)), ok_(false) {}
    Result(Unexpected u) : err_(std::move(u.error)), ok_(false) {}
    bool has_value() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error &error() const { return err_; }
    Error &error() { return err_; }

private:
    Error err_;
    bool ok_ = true;
};

inline Result<void> ok() { return {}; }

}  // namespace qimg

// Propagates an error from an expression returning Result<...>.
#define QIMG_TRY(expr)                                        \
    do {                                                      \
        auto &&qimg_try_r_ = (expr);                          \
        if (!qimg_try_r_) return ::qimg::Err(qimg_try_r_.error()); \
    } while (0)

// Evaluates a Result<T> expression into `var`, or returns its error.
#define QIMG_CONCAT2(a, b) a##b
#define QIMG_CONCAT(a, b) QIMG_CONCAT2(a, b)
#define QIMG_ASSIGN(var, expr) QIMG_ASSIGN_IMPL(QIMG_CONCAT(qimg_r_, __LINE__), var, expr)
#define QIMG_ASSIGN_IMPL(tmp, var, expr)                  \
    auto tmp = (expr);                                    \
    if (!tmp) return ::qimg::Err(std::move(tmp.error())); \
    var = std::move(*tmp)
