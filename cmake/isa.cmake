# Per-file instruction-set flags for the kernel families of src/cpu/cpu_features.h. A family's
# files are compiled for exactly that family (the AVX2 files with AVX-512 switched off, even
# under DSEEK_NATIVE), so each family is what the run-time dispatch claims it is and can be
# tested on an AVX-512 machine.
#   dseek_isa_sources(avx2 src/cpu/x86/foo_avx2.cc ...)
#   dseek_isa_sources(avx512 src/cpu/x86/foo_avx512.cc ...)
set(DSEEK_ISA_FLAGS_avx2 -mavx2 -mfma -mf16c -mno-avx512f)
set(DSEEK_ISA_FLAGS_avx512 -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16
    -mavx512vnni)
# The one file that uses GFNI (linear_fp8_avx512.cc) gets it alone, so that the compiler cannot
# put GFNI instructions into code that AVX-512 CPUs without it (Skylake-SP) run.
set(DSEEK_ISA_FLAGS_avx512_gfni ${DSEEK_ISA_FLAGS_avx512} -mgfni)
function(dseek_isa_sources isa)
  if(NOT DEFINED DSEEK_ISA_FLAGS_${isa})
    message(FATAL_ERROR "dseek_isa_sources: unknown instruction set '${isa}' (avx2, avx512 or avx512_gfni)")
  endif()
  set_source_files_properties(${ARGN} PROPERTIES COMPILE_OPTIONS "${DSEEK_ISA_FLAGS_${isa}}")
endfunction()
