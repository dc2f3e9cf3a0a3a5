// The web chat page served at GET /, compiled into the binary (the bytes of index.html, app.js
// and style.css, written into a generated .cc by embed.cmake at build time).
#pragma once

#include <string_view>

namespace dseek::serve::web {

extern const std::string_view kIndexHtml;
extern const std::string_view kAppJs;
extern const std::string_view kStyleCss;

}  // namespace dseek::serve::web
