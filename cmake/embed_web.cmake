# Turns the page's files (core/serve/web/) into C++ strings: `labctl serve` reads no
# file at run time, so it serves exactly what was built and nothing else.
file(READ ${DIR}/index.html html)
file(READ ${DIR}/app.js js)
file(READ ${DIR}/app.css css)
file(WRITE ${OUT} "// Generated from core/serve/web/; do not edit.\n"
  "namespace labctl::serve::web {\n"
  "extern const char* const kIndexHtml; extern const char* const kAppJs; extern const char* const kAppCss;\n"
  "const char* const kIndexHtml = R\"labctl_web(${html})labctl_web\";\n"
  "const char* const kAppJs = R\"labctl_web(${js})labctl_web\";\n"
  "const char* const kAppCss = R\"labctl_web(${css})labctl_web\";\n"
  "}\n")
