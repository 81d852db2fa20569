# Turns the JSON Schema into a C++ string so the validator needs no file at run time.
file(READ ${IN} text)
file(WRITE ${OUT} "// Generated from topology-schemas/topology.schema.json; do not edit.\n"
  "namespace labctl::topology { extern const char* const kSchemaText;\n"
  "const char* const kSchemaText = R\"labctl_schema(${text})labctl_schema\"; }\n")
