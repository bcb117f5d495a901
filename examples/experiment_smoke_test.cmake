# `vediff experiment --preset smoke` end to end, three ways: straight through; cut short after
# every 3 training steps and run again until done (each training stage must continue from its
# checkpoint, so every metric must equal the straight run's); and once more on the finished
# directory (every stage must be reused). Variables: VEDIFF (the program), WORK.
file(REMOVE_RECURSE ${WORK})
function(run_vediff out_var)
  execute_process(COMMAND ${VEDIFF} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc)
    message(FATAL_ERROR "vediff ${ARGN} failed (${rc}):\n${out}\n${err}")
  endif()
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

run_vediff(straight experiment --preset smoke --out ${WORK}/straight)
foreach(f table.md table.json preset.json figures/robustness.csv figures/sigma2_histogram.csv figures/equilibrium.csv
          kl_1e-06/samples_sde/samples.png ve_0.1/samples_ode/samples.png ve_0.1/eval/eval.json)
  if(NOT EXISTS ${WORK}/straight/${f})
    message(FATAL_ERROR "the smoke experiment wrote no ${f}:\n${straight}")
  endif()
endforeach()

# Interrupted every 3 steps: 2 rows x (tokenizer 6 steps + DiT 6 steps) = 8 cut-short runs at most.
set(done FALSE)
set(runs 0)
foreach(attempt RANGE 1 12)
  set(runs ${attempt})
  run_vediff(out experiment --preset smoke --out ${WORK}/interrupted --classifier ${WORK}/straight/classifier/classifier.safetensors
             --stop-after 3)
  if(EXISTS ${WORK}/interrupted/table.json)
    set(done TRUE)
    break()
  endif()
  if(NOT out MATCHES "stopped early")
    message(FATAL_ERROR "run ${attempt} neither finished nor said it stopped early:\n${out}")
  endif()
  if(attempt GREATER 1 AND NOT out MATCHES "resumed from")
    message(FATAL_ERROR "run ${attempt} did not resume a checkpoint:\n${out}")
  endif()
endforeach()
if(NOT done)
  message(FATAL_ERROR "the interrupted experiment did not finish in 12 runs")
endif()
if(NOT runs EQUAL 5)
  message(FATAL_ERROR "expected 4 cut-short runs and a 5th that finishes (2 rows x 2 training stages), got ${runs} runs")
endif()

foreach(row kl_1e-06 ve_0.1)
  file(READ ${WORK}/straight/${row}/eval/eval.json a)
  file(READ ${WORK}/interrupted/${row}/eval/eval.json b)
  foreach(path "tokenizer;psnr" "tokenizer;rfd" "tokenizer;sigma2_mean" "samples;samples_sde;gfd" "samples;samples_ode;gfd"
               "samples;samples_sde;precision")
    string(JSON va GET "${a}" ${path})
    string(JSON vb GET "${b}" ${path})
    if(NOT va STREQUAL vb)
      message(FATAL_ERROR "${row} ${path}: ${va} straight through but ${vb} after interruptions")
    endif()
  endforeach()
endforeach()

run_vediff(again experiment --preset smoke --out ${WORK}/straight)
string(REGEX MATCHALL "\\(reused\\)" reused "${again}")
list(LENGTH reused n_reused)
# The classifier and the 2 evaluated rows (a row with eval/eval.json is reused whole).
if(NOT n_reused EQUAL 3 OR again MATCHES "resumed from")
  message(FATAL_ERROR "the finished experiment should reuse the classifier and both rows, reused ${n_reused}:\n${again}")
endif()

# A finished row carried as its eval/ directory alone (no checkpoints, latents or samples): the
# same table, nothing retrained.
file(REMOVE_RECURSE ${WORK}/carried)
file(MAKE_DIRECTORY ${WORK}/carried)
file(COPY ${WORK}/straight/preset.json ${WORK}/straight/classifier DESTINATION ${WORK}/carried)
foreach(row kl_1e-06 ve_0.1)
  file(COPY ${WORK}/straight/${row}/eval DESTINATION ${WORK}/carried/${row})
endforeach()
run_vediff(carried experiment --preset smoke --out ${WORK}/carried)
file(READ ${WORK}/straight/table.md straight_table)
file(READ ${WORK}/carried/table.md carried_table)
if(NOT carried_table STREQUAL straight_table OR carried MATCHES ": tokenizer")
  message(FATAL_ERROR "rows carried as eval/ alone should be tabulated as before without training:\n${carried}\n${carried_table}")
endif()
# --rows: a subset of the finished run is reused and tabulated alone; an unknown row is refused by name.
run_vediff(subset experiment --preset smoke --out ${WORK}/straight --rows ve_0.1)
string(REGEX MATCHALL "\\(reused\\)" reused "${subset}")
list(LENGTH reused n_reused)
file(READ ${WORK}/straight/table.json subset_table)
string(JSON n_rows LENGTH "${subset_table}")
string(JSON subset_name GET "${subset_table}" 0 name)
if(NOT n_reused EQUAL 2 OR NOT n_rows EQUAL 1 OR NOT subset_name STREQUAL "ve_0.1")
  message(FATAL_ERROR "--rows ve_0.1 should reuse the classifier and that row and tabulate that row alone; reused ${n_reused}, table:\n${subset_table}")
endif()
execute_process(COMMAND ${VEDIFF} experiment --preset smoke --out ${WORK}/straight --rows kl_1e-06,ve_0.5
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc OR NOT "${out}${err}" MATCHES "no row 've_0.5' \\(its rows: kl_1e-06, ve_0.1\\)")
  message(FATAL_ERROR "--rows with an unknown row should fail naming it and the preset's rows (${rc}):\n${out}\n${err}")
endif()

message(STATUS "smoke experiment: straight, interrupted 4 times and resumed (same metrics), fully reused, carried as eval/ alone, and a --rows subset")
