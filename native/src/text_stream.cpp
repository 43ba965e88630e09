#include "text_stream.h"

#include "internal.h"

#include <algorithm>
#include <cstring>

namespace fe {

namespace {

// Bytes in a sequence led by `c`, 0 for a byte that cannot lead one.
int seq_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

// Whether s[1..] continues the sequence led by s[0] correctly at byte k (RFC 3629 ranges).
bool cont_ok(const unsigned char *s, int k) {
    unsigned char c = s[k];
    if (k == 1) {
        if (s[0] == 0xE0) return c >= 0xA0 && c <= 0xBF;
        if (s[0] == 0xED) return c >= 0x80 && c <= 0x9F;
        if (s[0] == 0xF0) return c >= 0x90 && c <= 0xBF;
        if (s[0] == 0xF4) return c >= 0x80 && c <= 0x8F;
    }
    return c >= 0x80 && c <= 0xBF;
}

}  // namespace

void append_valid_utf8(std::string &out, const char *str, size_t n) {
    const auto *s = reinterpret_cast<const unsigned char *>(str);
    size_t i = 0;
    while (i < n) {
        int len = seq_len(s[i]);
        if (len == 1) {
            out.push_back((char)s[i++]);
            continue;
        }
        int k = 1;
        if (len > 0)
            while (k < len && i + (size_t)k < n && cont_ok(s + i, k)) k++;
        if (len > 0 && k == len) {
            out.append(str + i, (size_t)len);
            i += (size_t)len;
        } else {
            out.append("\xEF\xBF\xBD");  // one U+FFFD per maximal invalid subpart
            i += (size_t)std::max(k, 1);
        }
    }
}

size_t utf8_complete_prefix(const char *str, size_t n) {
    const auto *s = reinterpret_cast<const unsigned char *>(str);
    // Look back at most 3 bytes for the lead byte of the last sequence.
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = s[n - back];
        if (c >= 0x80 && c <= 0xBF) continue;  // continuation byte: keep looking
        int len = seq_len(c);
        if (len <= 1) return n;  // ASCII or invalid lead: nothing to wait for
        if ((size_t)len <= back) return n;  // complete
        for (size_t k = 1; k < back; k++)
            if (!cont_ok(s + n - back, (int)k)) return n;  // already invalid: waiting cannot help
        return n - back;
    }
    return n;
}

TextStream::TextStream(std::vector<std::string> stops) {
    for (auto &s : stops)
        if (!s.empty()) stops_.push_back(std::move(s));
    for (const auto &s : stops_) longest_ = std::max(longest_, s.size());
}

void TextStream::release(size_t n) {
    append_valid_utf8(out_, pending_.data(), n);
    pending_.erase(0, n);
}

const std::string &TextStream::push(const char *bytes, size_t n) {
    out_.clear();
    if (stopped_) return out_;
    size_t old = pending_.size();
    pending_.append(bytes, n);
    if (!stops_.empty()) {
        // Only a match that ends in the new bytes can be new; start where it could begin.
        size_t from = old >= longest_ ? old - longest_ + 1 : 0;
        size_t hit = std::string::npos;
        for (const auto &s : stops_) hit = std::min(hit, pending_.find(s, from));
        if (hit != std::string::npos) {
            stopped_ = true;
            release(hit);
            pending_.clear();
            return out_;
        }
    }
    size_t hold = 0;  // longest suffix that is a proper prefix of a stop string
    for (const auto &s : stops_)
        for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; k--)
            if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
                hold = k;
                break;
            }
    size_t limit = utf8_complete_prefix(pending_.data(), pending_.size() - hold);
    release(limit);
    return out_;
}

const std::string &TextStream::finish() {
    out_.clear();
    if (!stopped_) release(pending_.size());
    pending_.clear();
    return out_;
}

}  // namespace fe

// The C API of the same filter (the ONNX backend uses it from Python).
struct fe_text_stream {
    fe::TextStream impl;
};

extern "C" {

fe_text_stream *fe_text_stream_new(const char *const *stop, size_t n_stop) {
    fe::clear_error();
    if (n_stop > 0 && !stop) {
        fe::set_error(FE_ERR_INVALID_ARG, "fe_text_stream_new: n_stop > 0 but stop is NULL");
        return nullptr;
    }
    try {
        std::vector<std::string> stops;
        for (size_t i = 0; i < n_stop; i++)
            if (stop[i]) stops.emplace_back(stop[i]);
        return new fe_text_stream{fe::TextStream(std::move(stops))};
    } catch (...) {
        fe::set_error(FE_ERR_OUT_OF_MEMORY, "fe_text_stream_new: out of memory");
        return nullptr;
    }
}

fe_status fe_text_stream_push(fe_text_stream *ts, const char *bytes, size_t n, const char **out, size_t *out_len,
                              bool *stopped) {
    return fe::guard("fe_text_stream_push", [&]() -> fe_status {
        fe::clear_error();
        if (!ts || (n > 0 && !bytes) || !out || !out_len)
            return fe::set_error(FE_ERR_INVALID_ARG, "fe_text_stream_push: NULL argument");
        const std::string &r = ts->impl.push(bytes ? bytes : "", n);
        *out = r.c_str();
        *out_len = r.size();
        if (stopped) *stopped = ts->impl.stopped();
        return FE_OK;
    });
}

fe_status fe_text_stream_finish(fe_text_stream *ts, const char **out, size_t *out_len) {
    return fe::guard("fe_text_stream_finish", [&]() -> fe_status {
        fe::clear_error();
        if (!ts || !out || !out_len) return fe::set_error(FE_ERR_INVALID_ARG, "fe_text_stream_finish: NULL argument");
        const std::string &r = ts->impl.finish();
        *out = r.c_str();
        *out_len = r.size();
        return FE_OK;
    });
}

void fe_text_stream_free(fe_text_stream *ts) { delete ts; }

}  // extern "C"
