# cstl_embed(NAME OUT FILE...) writes OUT, a C file defining `cstl_embedded_files`: every FILE's
# path (relative to the source root) and bytes, NUL-terminated so text files can be used as strings.
# The generation runs at build time and again whenever one of the files changes.
function(cstl_embed name out)
  set(files ${ARGN})
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DROOT=${PROJECT_SOURCE_DIR} "-DFILES=${files}"
            -P ${PROJECT_SOURCE_DIR}/cmake/embed_run.cmake
    DEPENDS ${files} ${PROJECT_SOURCE_DIR}/cmake/embed_run.cmake
    COMMENT "Embedding ${name}"
    VERBATIM)
endfunction()
