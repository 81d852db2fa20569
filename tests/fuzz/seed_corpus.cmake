# The seed corpus, made at build time from the project's own inputs instead of copies of them:
#   cmake -DROOT=<repository> -DOUT=<dir> -P seed_corpus.cmake
# good-*.json and bad-*.json from tests/data, lab-<name>.json from labs/<name>/topology.json,
# and tests/fuzz/extra/* (inputs found by fuzzing that are in no other folder).
if(NOT ROOT OR NOT OUT)
  message(FATAL_ERROR "seed_corpus.cmake needs -DROOT=... -DOUT=...")
endif()
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})
foreach(kind good bad)
  file(GLOB inputs ${ROOT}/tests/data/${kind}/*.json)
  foreach(input ${inputs})
    get_filename_component(name ${input} NAME)
    configure_file(${input} ${OUT}/${kind}-${name} COPYONLY)
  endforeach()
endforeach()
file(GLOB labs ${ROOT}/labs/*/topology.json)
foreach(topology ${labs})
  get_filename_component(dir ${topology} DIRECTORY)
  get_filename_component(name ${dir} NAME)
  configure_file(${topology} ${OUT}/lab-${name}.json COPYONLY)
endforeach()
file(GLOB extra ${ROOT}/tests/fuzz/extra/*)
file(COPY ${extra} DESTINATION ${OUT})
