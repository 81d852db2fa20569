# cmake -DOUT=FILE -DCMD="prog;arg;..." -P run_to_file.cmake: runs CMD, its stdout into FILE.
execute_process(COMMAND ${CMD} OUTPUT_FILE ${OUT}.tmp RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  file(REMOVE ${OUT}.tmp)
  message(FATAL_ERROR "${CMD} failed: ${rc}")
endif()
file(RENAME ${OUT}.tmp ${OUT})
