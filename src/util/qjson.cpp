// QEMU-compatible JSON reading and writing; see qjson.h. The lexer is the
// same state machine as qobject/json-lexer.c (a token ends on the first byte
// that cannot extend it; a bad byte becomes part of a "stray" error token),
// the streamer splits top-level values by brace/bracket depth, and the parser
// is recursive descent with "first error wins", so messages match QEMU's.
#include "util/qjson.h"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <fmt/format.h>

namespace qimg {

namespace {

using Json = nlohmann::ordered_json;

// ------------------------------------------------------------ modified UTF-8

bool is_valid_codepoint(int64_t cp) {
    if (cp < 0 || cp > 0x10FFFF) return false;
    if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) return false;  // noncharacter
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;                                // surrogate
    return true;
}

// util/unicode.c mod_utf8_codepoint() on s[pos..]: the code point or -1;
// `next` receives where decoding stopped. Bytes past the end read as NUL.
int64_t mod_utf8_codepoint(std::string_view s, size_t pos, size_t *next) {
    static constexpr int64_t kMinCp[5] = {0x80, 0x800, 0x10000, 0x200000, 0x4000000};
    auto at = [&](size_t i) -> unsigned { return i < s.size() ? static_cast<unsigned char>(s[i]) : 0u; };
    size_t p = pos;
    unsigned byte = at(p);
    if (byte == 0) {
        *next = p;
        return -1;
    }
    ++p;
    int64_t cp;
    if (byte < 0x80) {
        cp = byte;
    } else if (byte >= 0xFE || (byte & 0x40) == 0) {
        cp = -1;  // impossible byte, or unexpected continuation byte
    } else {
        unsigned len = 0, mask = 0x80;
        for (; byte & mask; mask >>= 1) ++len;
        cp = byte & (mask - 1);
        for (unsigned i = 1; i < len; ++i) {
            byte = at(p);
            if ((byte & 0xC0) != 0x80) {
                *next = p;
                return -1;  // continuation byte missing
            }
            ++p;
            cp = (cp << 6) | (byte & 0x3F);
        }
        if (!is_valid_codepoint(cp)) {
            cp = -1;
        } else if (cp < kMinCp[len - 2] && !(cp == 0 && len == 2)) {
            cp = -1;  // overlong, except the \xC0\x80 form of NUL
        }
    }
    *next = p;
    return cp;
}

// mod_utf8_encode(): false for invalid code points; NUL becomes C0 80.
bool mod_utf8_encode(std::string &out, int64_t cp) {
    if (!is_valid_codepoint(cp)) return false;
    if (cp > 0 && cp <= 0x7F) {
        out.push_back(static_cast<char>(cp));
    } else if (cp <= 0x7FF) {
        out.push_back(static_cast<char>(0xC0 | ((cp >> 6) & 0x1F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp <= 0xFFFF) {
        out.push_back(static_cast<char>(0xE0 | ((cp >> 12) & 0x0F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | ((cp >> 18) & 0x07)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return true;
}

// ------------------------------------------------------------------- lexer

enum class Tok { LCurly, RCurly, LSquare, RSquare, Colon, Comma, Integer, Float, Keyword, String, Error, End };

struct Token {
    Tok type;
    std::string text;
};

enum class Lex {
    Start, Recovery, DqString, DqEscape, SqString, SqEscape, Zero, ExpDigits, ExpSign, ExpE,
    Mantissa, MantissaDigits, Digits, Sign, Keyword
};

// One transition: go to `state`, or finish token `tok`; `lookahead` means the
// byte is not consumed and is fed again in the next state.
struct Step {
    bool emits;
    Lex state;
    Tok tok;
    bool lookahead;
};

constexpr Step go(Lex s) { return {false, s, Tok::Error, false}; }
constexpr Step emit(Tok t) { return {true, Lex::Start, t, false}; }
constexpr Step emit_before(Tok t) { return {true, Lex::Start, t, true}; }
constexpr Step restart() { return {false, Lex::Start, Tok::Error, true}; }
constexpr Step error() { return emit(Tok::Error); }

bool digit(unsigned c) { return c >= '0' && c <= '9'; }

Step lex_step(Lex st, unsigned c) {
    switch (st) {
    case Lex::Start:
        switch (c) {
        case '"': return go(Lex::DqString);
        case '\'': return go(Lex::SqString);
        case '0': return go(Lex::Zero);
        case '-': return go(Lex::Sign);
        case '{': return emit(Tok::LCurly);
        case '}': return emit(Tok::RCurly);
        case '[': return emit(Tok::LSquare);
        case ']': return emit(Tok::RSquare);
        case ',': return emit(Tok::Comma);
        case ':': return emit(Tok::Colon);
        case ' ': case '\t': case '\r': case '\n': return go(Lex::Start);
        }
        if (c >= '1' && c <= '9') return go(Lex::Digits);
        if (c >= 'a' && c <= 'z') return go(Lex::Keyword);
        return error();
    case Lex::Recovery:
        // Skip to a structural character or a control byte, then resync.
        if (c == '\t') return go(Lex::Recovery);
        if (c < 0x20 || c >= 0xFE) return restart();
        switch (c) {
        case '[': case ']': case '{': case '}': case ':': case ',': return restart();
        }
        return go(Lex::Recovery);
    case Lex::DqString:
    case Lex::SqString: {
        const bool dq = st == Lex::DqString;
        if (c < 0x20 || c > 0xFD) return error();
        if (c == '\\') return go(dq ? Lex::DqEscape : Lex::SqEscape);
        if (c == (dq ? '"' : '\'')) return emit(Tok::String);
        return go(st);
    }
    case Lex::DqEscape:
    case Lex::SqEscape:
        if (c < 0x20 || c > 0xFD) return error();
        return go(st == Lex::DqEscape ? Lex::DqString : Lex::SqString);
    case Lex::Zero:
        if (digit(c)) return error();
        if (c == '.') return go(Lex::Mantissa);
        return emit_before(Tok::Integer);
    case Lex::ExpDigits:
        if (digit(c)) return go(Lex::ExpDigits);
        return emit_before(Tok::Float);
    case Lex::ExpSign:
        if (digit(c)) return go(Lex::ExpDigits);
        return error();
    case Lex::ExpE:
        if (c == '-' || c == '+') return go(Lex::ExpSign);
        if (digit(c)) return go(Lex::ExpDigits);
        return error();
    case Lex::MantissaDigits:
        if (digit(c)) return go(Lex::MantissaDigits);
        if (c == 'e' || c == 'E') return go(Lex::ExpE);
        return emit_before(Tok::Float);
    case Lex::Mantissa:
        if (digit(c)) return go(Lex::MantissaDigits);
        return error();
    case Lex::Digits:
        if (digit(c)) return go(Lex::Digits);
        if (c == 'e' || c == 'E') return go(Lex::ExpE);
        if (c == '.') return go(Lex::Mantissa);
        return emit_before(Tok::Integer);
    case Lex::Sign:
        if (c == '0') return go(Lex::Zero);
        if (c >= '1' && c <= '9') return go(Lex::Digits);
        return error();
    case Lex::Keyword:
        if (c >= 'a' && c <= 'z') return go(Lex::Keyword);
        return emit_before(Tok::Keyword);
    }
    return error();
}

// ------------------------------------------------------------------ parser

class Parser {
public:
    explicit Parser(const std::vector<Token> &tokens) : toks_(tokens) {}

    // json_parser_parse(): one value or the first error.
    Result<Json> parse() {
        std::optional<Json> v = value();
        if (!v) return make_error(EINVAL, *err_);
        return std::move(*v);
    }

private:
    const Token *peek() const { return pos_ < toks_.size() ? &toks_[pos_] : nullptr; }
    const Token *pop() { return pos_ < toks_.size() ? &toks_[pos_++] : nullptr; }
    std::nullopt_t fail(const std::string &msg) {
        if (!err_) err_ = "JSON parse error, " + msg;
        return std::nullopt;
    }

    std::optional<Json> value() {
        const Token *t = peek();
        if (!t) return fail("premature EOI");
        switch (t->type) {
        case Tok::LCurly: return object();
        case Tok::LSquare: return array();
        case Tok::Integer:
        case Tok::Float: return number(*pop());
        case Tok::String: return string(*pop());
        case Tok::Keyword: return keyword(*pop());
        default: return fail("expecting value");
        }
    }

    std::optional<Json> object() {
        pop();  // '{'
        Json obj = Json::object();
        const Token *t = peek();
        if (!t) return fail("premature EOI");
        if (t->type == Tok::RCurly) {
            pop();
            return obj;
        }
        if (!pair(obj)) return std::nullopt;
        for (;;) {
            t = pop();
            if (!t) return fail("premature EOI");
            if (t->type == Tok::RCurly) return obj;
            if (t->type != Tok::Comma) return fail("expected separator in dict");
            if (!pair(obj)) return std::nullopt;
        }
    }

    bool pair(Json &obj) {
        if (!peek()) return fail("premature EOI"), false;
        std::optional<Json> key = value();
        if (!key || !key->is_string()) return fail("key is not a string in object"), false;
        const Token *t = pop();
        if (!t) return fail("premature EOI"), false;
        if (t->type != Tok::Colon) return fail("missing : in object pair"), false;
        std::optional<Json> v = value();
        if (!v) return fail("Missing value in dict"), false;
        const std::string &k = key->get_ref<const std::string &>();
        if (obj.contains(k)) return fail("duplicate key"), false;
        obj[k] = std::move(*v);
        return true;
    }

    std::optional<Json> array() {
        pop();  // '['
        Json list = Json::array();
        const Token *t = peek();
        if (!t) return fail("premature EOI");
        if (t->type == Tok::RSquare) {
            pop();
            return list;
        }
        for (;;) {
            std::optional<Json> v = value();
            if (!v) return fail("expecting value");
            list.push_back(std::move(*v));
            t = pop();
            if (!t) return fail("premature EOI");
            if (t->type == Tok::RSquare) return list;
            if (t->type != Tok::Comma) return fail("expected separator in list");
        }
    }

    std::optional<Json> keyword(const Token &t) {
        if (t.text == "true") return Json(true);
        if (t.text == "false") return Json(false);
        if (t.text == "null") return Json(nullptr);
        return fail(fmt::format("invalid keyword '{}'", t.text));
    }

    // JSON_INTEGER as int64 if it fits, else uint64, else double.
    static Json number(const Token &t) {
        const char *s = t.text.c_str();
        if (t.type == Tok::Integer) {
            errno = 0;
            const long long i = std::strtoll(s, nullptr, 10);
            if (errno == 0) return Json(static_cast<int64_t>(i));
            if (s[0] != '-') {
                errno = 0;
                const unsigned long long u = std::strtoull(s, nullptr, 10);
                if (errno == 0) return Json(static_cast<uint64_t>(u));
            }
        }
        return Json(std::strtod(s, nullptr));
    }

    static int cvt4hex(std::string_view s, size_t pos) {
        int cp = 0;
        for (size_t i = pos; i < pos + 4; ++i) {
            if (i >= s.size()) return -1;
            const char c = s[i];
            cp <<= 4;
            if (c >= '0' && c <= '9') cp |= c - '0';
            else if (c >= 'a' && c <= 'f') cp |= 10 + c - 'a';
            else if (c >= 'A' && c <= 'F') cp |= 10 + c - 'A';
            else return -1;
        }
        return cp;
    }

    std::optional<Json> string(const Token &t) {
        const std::string_view s = t.text;
        const char quote = s[0];
        std::string out;
        size_t p = 1;
        while (p < s.size() && s[p] != quote) {
            if (s[p] != '\\') {
                size_t next = p;
                const int64_t cp = mod_utf8_codepoint(s, p, &next);
                if (cp < 0) return fail("invalid UTF-8 sequence in string");
                mod_utf8_encode(out, cp);
                p = next;
                continue;
            }
            const size_t beg = p++;
            const char esc = s[p++];
            switch (esc) {
            case '"': out.push_back('"'); break;
            case '\'': out.push_back('\''); break;
            case '\\': out.push_back('\\'); break;
            case '/': out.push_back('/'); break;
            case 'b': out.push_back('\b'); break;
            case 'f': out.push_back('\f'); break;
            case 'n': out.push_back('\n'); break;
            case 'r': out.push_back('\r'); break;
            case 't': out.push_back('\t'); break;
            case 'u': {
                int64_t cp = cvt4hex(s, p);
                p += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF && p + 1 < s.size() && s[p] == '\\' && s[p + 1] == 'u') {
                    cp = 0x10000 + ((cp & 0x3FF) << 10);
                    const int trailing = cvt4hex(s, p + 2);
                    if (trailing >= 0xDC00 && trailing <= 0xDFFF) {
                        cp |= trailing & 0x3FF;
                        p += 6;
                    } else {
                        cp = -1;
                    }
                }
                if (!mod_utf8_encode(out, cp)) {
                    // QEMU prints up to where it stopped, clipped at the token's end.
                    const std::string_view shown = s.substr(beg, std::min(p, s.size()) - beg);
                    return fail(fmt::format("{} is not a valid Unicode character", shown));
                }
                break;
            }
            default: return fail("invalid escape sequence in string");
            }
        }
        return Json(std::move(out));
    }

    const std::vector<Token> &toks_;
    size_t pos_ = 0;
    std::optional<std::string> err_;
};

// ---------------------------------------------------------------- streamer

constexpr int kMaxNesting = 1 << 10;

// json-streamer.c plus qjson.c consume_json(): collects top-level values.
class Streamer {
public:
    void token(Tok type, const std::string &text) {
        if (err_) return;  // later values and errors are ignored
        switch (type) {
        case Tok::LCurly: ++braces_; break;
        case Tok::RCurly: --braces_; break;
        case Tok::LSquare: ++brackets_; break;
        case Tok::RSquare: --brackets_; break;
        case Tok::Error: return deliver(make_error(EINVAL, fmt::format("JSON parse error, stray '{}'", text)));
        case Tok::End:
            if (tokens_.empty()) return;
            return deliver(Parser(tokens_).parse());
        default: break;
        }
        if (braces_ + brackets_ > kMaxNesting) return deliver(make_error(EINVAL, "JSON nesting depth limit exceeded"));
        tokens_.push_back({type, text});
        if ((braces_ > 0 || brackets_ > 0) && braces_ >= 0 && brackets_ >= 0) return;
        deliver(Parser(tokens_).parse());
    }

    Result<Json> finish() {
        if (err_) return *err_;
        if (!result_) return make_error(EINVAL, "Expecting a JSON value");
        return std::move(*result_);
    }

private:
    void deliver(Result<Json> r) {
        braces_ = brackets_ = 0;
        tokens_.clear();
        if (result_) {
            result_.reset();
            err_ = make_error(EINVAL, "Expecting at most one JSON value");
            return;
        }
        if (r) {
            result_ = std::move(*r);
        } else {
            err_ = std::move(r.error());
        }
    }

    std::vector<Token> tokens_;
    int braces_ = 0, brackets_ = 0;
    std::optional<Json> result_;
    std::optional<Error> err_;
};

void lex_byte(Lex &state, std::string &text, Streamer &out, unsigned c, bool flush) {
    bool consumed = false;
    while (flush ? state != Lex::Start : !consumed) {
        const Step st = lex_step(state, c);
        consumed = !flush && !st.lookahead;
        if (consumed) text.push_back(static_cast<char>(c));
        if (st.emits) {
            out.token(st.tok, text);
            text.clear();
            state = st.tok == Tok::Error ? Lex::Recovery : Lex::Start;
        } else {
            if (st.state == Lex::Start || st.state == Lex::Recovery) text.clear();
            state = st.state;
        }
    }
}

// ------------------------------------------------------------------ writer

class Writer {
public:
    explicit Writer(bool pretty, bool qdict_order) : pretty_(pretty), qdict_order_(qdict_order) {}

    void value(const char *name, const Json &j) {
        switch (j.type()) {
        case Json::value_t::object: {
            start(name, '{', false);
            if (qdict_order_) {
                for (const std::string &k : qdict_order(j)) value(k.c_str(), j.at(k));
            } else {
                for (auto it = j.begin(); it != j.end(); ++it) value(it.key().c_str(), *it);
            }
            end('}');
            break;
        }
        case Json::value_t::array:
            start(name, '[', true);
            for (const Json &e : j) value(nullptr, e);
            end(']');
            break;
        case Json::value_t::string:
            comma_name(name);
            quoted(j.get_ref<const std::string &>());
            break;
        case Json::value_t::boolean:
            comma_name(name);
            out_ += j.get<bool>() ? "true" : "false";
            break;
        case Json::value_t::number_integer:
            comma_name(name);
            out_ += fmt::format("{}", j.get<int64_t>());
            break;
        case Json::value_t::number_unsigned:
            comma_name(name);
            out_ += fmt::format("{}", j.get<uint64_t>());
            break;
        case Json::value_t::number_float: {
            comma_name(name);
            char buf[64];
            std::snprintf(buf, sizeof buf, "%.17g", j.get<double>());
            out_ += buf;
            break;
        }
        default:  // null, and the nlohmann-only binary/discarded kinds
            comma_name(name);
            out_ += "null";
            break;
        }
    }

    std::string take() { return std::move(out_); }

private:
    void newline() {
        if (pretty_) {
            out_ += '\n';
            out_.append(stack_.size() * 4, ' ');
        }
    }
    void comma_name(const char *name) {
        if (need_comma_) {
            out_ += ',';
            if (pretty_) newline(); else out_ += ' ';
        } else {
            if (!out_.empty()) newline();
            need_comma_ = true;
        }
        if (!stack_.empty() && !stack_.back()) {
            quoted(name ? name : "");
            out_ += ": ";
        }
    }
    void start(const char *name, char open, bool is_array) {
        comma_name(name);
        out_ += open;
        stack_.push_back(is_array);
        need_comma_ = false;
    }
    void end(char close) {
        stack_.pop_back();
        need_comma_ = true;
        newline();
        out_ += close;
    }
    // json-writer.c quoted_str(): stops at a NUL byte like the C original.
    void quoted(std::string_view s) {
        out_ += '"';
        size_t p = 0;
        while (p < s.size() && s[p] != '\0') {
            size_t next = p;
            int64_t cp = mod_utf8_codepoint(s, p, &next);
            p = next;
            switch (cp) {
            case '"': out_ += "\\\""; continue;
            case '\\': out_ += "\\\\"; continue;
            case '\b': out_ += "\\b"; continue;
            case '\f': out_ += "\\f"; continue;
            case '\n': out_ += "\\n"; continue;
            case '\r': out_ += "\\r"; continue;
            case '\t': out_ += "\\t"; continue;
            }
            if (cp < 0) cp = 0xFFFD;
            if (cp > 0xFFFF) {
                out_ += fmt::format("\\u{:04X}\\u{:04X}", 0xD800 + ((cp - 0x10000) >> 10),
                                    0xDC00 + ((cp - 0x10000) & 0x3FF));
            } else if (cp < 0x20 || cp >= 0x7F) {
                out_ += fmt::format("\\u{:04X}", cp);
            } else {
                out_ += static_cast<char>(cp);
            }
        }
        out_ += '"';
    }

    bool pretty_, qdict_order_;
    bool need_comma_ = false;
    std::vector<bool> stack_;  // true: array
    std::string out_;
};

}  // namespace

Result<nlohmann::ordered_json> parse_qemu_json(std::string_view text) {
    if (const size_t nul = text.find('\0'); nul != std::string_view::npos) text = text.substr(0, nul);
    Streamer streamer;
    Lex state = Lex::Start;
    std::string token_text;
    for (char ch : text) lex_byte(state, token_text, streamer, static_cast<unsigned char>(ch), false);
    lex_byte(state, token_text, streamer, 0, true);
    streamer.token(Tok::End, token_text);
    return streamer.finish();
}

unsigned qdict_bucket(std::string_view key) {
    // qobject/qdict.c tdb_hash(), on the C string.
    if (const size_t nul = key.find('\0'); nul != std::string_view::npos) key = key.substr(0, nul);
    uint32_t value = 0x238F13AFu * static_cast<uint32_t>(key.size());
    for (size_t i = 0; i < key.size(); ++i) {
        value += static_cast<uint32_t>(static_cast<unsigned char>(key[i])) << (i * 5 % 24);
    }
    return (1103515243u * value + 12345u) % 512u;
}

std::vector<std::string> qdict_order(const nlohmann::ordered_json &obj) {
    std::vector<std::pair<unsigned, size_t>> order;  // (bucket, insertion index)
    std::vector<std::string> keys;
    if (!obj.is_object()) return keys;
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        order.emplace_back(qdict_bucket(it.key()), keys.size());
        keys.push_back(it.key());
    }
    // Ascending bucket; within a bucket the newest entry is at the list head.
    std::sort(order.begin(), order.end(), [](const auto &a, const auto &b) {
        return a.first != b.first ? a.first < b.first : a.second > b.second;
    });
    std::vector<std::string> out;
    out.reserve(keys.size());
    for (const auto &o : order) out.push_back(std::move(keys[o.second]));
    return out;
}

std::string to_qemu_json(const nlohmann::ordered_json &j, bool pretty, bool qdict_order) {
    Writer w(pretty, qdict_order);
    w.value(nullptr, j);
    return w.take();
}

}  // namespace qimg
