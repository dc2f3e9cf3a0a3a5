# Writes OUT, a C++ file holding the web chat page's files (WEB_DIR/index.html, app.js,
# style.css) as byte arrays, for web_assets.h. Run at build time: cmake -DOUT=... -DWEB_DIR=... -P
set(body "")
foreach(pair "index.html;kIndexHtml" "app.js;kAppJs" "style.css;kStyleCss")
  list(GET pair 0 file)
  list(GET pair 1 name)
  file(READ ${WEB_DIR}/${file} hex HEX)
  string(LENGTH "${hex}" hex_len)
  math(EXPR size "${hex_len} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  # A trailing 0 keeps an empty file's array legal; the view's size leaves it out.
  string(APPEND body "const unsigned char ${name}Bytes[] = {${bytes}0};\n"
         "}  // namespace\nconst std::string_view ${name}(reinterpret_cast<const char*>(${name}Bytes), ${size});\nnamespace {\n")
endforeach()
file(WRITE ${OUT}.tmp "// Generated from src/serve/web/ by embed.cmake; do not edit.\n"
     "#include \"serve/web/web_assets.h\"\n\nnamespace dseek::serve::web {\nnamespace {\n${body}}  // namespace\n"
     "}  // namespace dseek::serve::web\n")
# Only a changed page recompiles.
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
