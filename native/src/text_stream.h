// Text of a generation as it becomes final: holds back bytes that may start a stop string or
// an incomplete UTF-8 sequence, cuts at the first stop string, and only ever releases valid
// UTF-8 (invalid bytes become U+FFFD). One implementation for every backend: the GGUF loop in
// generate.cpp and, through fe_text_stream_*, the ONNX backend in Python.
#pragma once

#include <string>
#include <vector>

namespace fe {

class TextStream {
  public:
    explicit TextStream(std::vector<std::string> stops = {});
    // Adds a token's bytes; returns the text that is now final. Once a stop string has been
    // found, stopped() is true and further pushes return nothing.
    const std::string &push(const char *bytes, size_t n);
    // The rest (held-back bytes, sanitized); nothing after a stop string.
    const std::string &finish();
    bool stopped() const { return stopped_; }

  private:
    void release(size_t n);  // moves the first n bytes of pending_ to out_ (sanitized)

    std::vector<std::string> stops_;
    size_t longest_ = 0;
    std::string pending_;
    std::string out_;
    bool stopped_ = false;
};

// Appends `n` bytes to `out`, replacing every invalid UTF-8 subsequence with U+FFFD.
void append_valid_utf8(std::string &out, const char *s, size_t n);
// Length of the longest prefix of s[0..n) that does not end inside a possibly incomplete
// UTF-8 sequence (a valid lead byte whose continuation bytes have not all arrived).
size_t utf8_complete_prefix(const char *s, size_t n);

}  // namespace fe
