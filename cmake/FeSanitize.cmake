# fe_sanitize(<target>): ASan + UBSan on our own code when FE_SANITIZE is ON. The
# llama.cpp static libs stay unsanitized (they are prebuilt once per pin and flags).
function(fe_sanitize target)
  if(FE_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer
                                             -fno-sanitize-recover=undefined)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
