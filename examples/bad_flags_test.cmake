# Bad command lines of every subcommand (issue 19): each is answered with one line on stderr naming
# the flag and its value, exit code 2, and nothing written (the case's --out does not appear).
# Variables: VEDIFF (the program), WORK (a scratch directory).
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/a_directory)
file(WRITE ${WORK}/a_file "not a directory\n")
set(out ${WORK}/out)

# Each case: "subcommand|arguments separated by commas|regular expression of the message" (no square
# brackets: they would group the elements of a CMake list).
set(cases
  "train-tokenizer|--steps,-5,--out,${out}|--steps -5: must be a positive integer"
  "train-tokenizer|--batch,abc,--out,${out}|--batch abc: not an integer"
  "train-tokenizer|--lr,nan,--out,${out}|--lr nan: must be a finite number"
  "train-tokenizer|--ve-weight,-0.1,--out,${out}|--ve-weight -0.1: must be ≥ 0"
  "train-tokenizer|--beta1,1,--out,${out}|--beta1 1: must be in .0, 1.$"
  "train-tokenizer|--workers,-1,--out,${out}|--workers -1: must be an integer ≥ 0"
  "train-tokenizer|--data,${WORK}/missing,--out,${out}|--data .*/missing: no such directory"
  "train-tokenizer|--data,${WORK}/a_file,--out,${out}|--data .*/a_file: a file, where a directory is expected"
  "train-tokenizer|--image-folder,${WORK}/a_file,--out,${out}|--image-folder .*/a_file: a file, where a directory is expected"
  "train-tokenizer|--init-from,${WORK}/a_directory,--out,${out}|--init-from .*/a_directory: a directory, where a file is expected"
  "train-tokenizer|--out,${WORK}/a_file/run|--out .*/a_file/run: cannot be made: .*/a_file is a file, not a directory"
  "train-tokenizer|--checkpoint-every,0,--out,${out}|--checkpoint-every 0: must be a positive integer"
  "train-tokenizer|--steps|--steps: a value is expected after it"
  "encode|--tokenizer,${WORK}/missing,--out,${out}|--tokenizer .*/missing: no such directory"
  "encode|--tokenizer,${WORK}/a_directory,--out,${WORK}/a_directory|--out .*/a_directory: a directory, where a file is to be written"
  "encode|--max-images,-3,--tokenizer,${WORK}/a_directory,--out,${out}|--max-images -3: must be an integer ≥ 0"
  "export|--tokenizer,${WORK}/missing,--out,${out}|--tokenizer .*/missing: no such directory"
  "train-dit|--latents,${WORK}/a_directory,--out,${out}|--latents .*/a_directory: a directory, where a file is expected"
  "train-dit|--ema,1.5,--out,${out}|--ema 1.5: must be in .0, 1.$"
  "train-dit|--latents,${WORK}/a_file,--precision,fp16,--out,${out}|--precision fp16: expected fp32 or bf16"
  "train-tokenizer|--precision,bf8,--out,${out}|--precision bf8: expected fp32 or bf16"
  "sample|--dit,${WORK}/a_directory,--no-classifier,--precision,fp16,--out,${out}|--precision fp16: expected fp32 or bf16"
  "train-dit|--class-dropout,-0.1,--out,${out}|--class-dropout -0.1: must be in .0, 1.$"
  "train-dit|--depth,0,--out,${out}|--depth 0: must be a positive integer"
  "sample|--dit,${WORK}/missing,--out,${out}|--dit .*/missing: no such directory"
  "sample|--steps,0,--out,${out}|--steps 0: must be a positive integer"
  "sample|--cfg,inf,--out,${out}|--cfg inf: must be a finite number"
  "eval|--tokenizer,${WORK}/missing,--out,${out}|--tokenizer .*/missing: no such directory"
  "eval|--classifier,${WORK}/missing.safetensors,--out,${out}|--classifier .*/missing.safetensors: no such file"
  "eval|--k,0,--out,${out}|--k 0: must be a positive integer"
  "toy|--flow-steps,0,--out,${out}|--flow-steps 0: must be a positive integer"
  "toy|--seed,-1,--out,${out}|--seed -1: must be an integer ≥ 0"
  "classifier|--epochs,-1,--out,${out}|--epochs -1: must be a positive integer"
  "classifier|--lr,0,--out,${out}|--lr 0: must be > 0"
  "experiment|--stop-after,-2,--out,${out}|--stop-after -2: must be an integer ≥ 0"
  "eval|--samples,${WORK}/missing,--out,${out}|--samples .*/missing: no such directory"
  "toy|--samples,0,--out,${out}|--samples 0: must be a positive integer"
  "experiment|--inception-weights,${WORK}/missing.safetensors,--out,${out}|--inception-weights .*/missing.safetensors: no such file"
)
set(failures 0)
foreach(case IN LISTS cases)
  string(REPLACE "|" ";" parts "${case}")
  list(GET parts 0 command)
  list(GET parts 1 arguments)
  list(GET parts 2 expected)
  string(REPLACE "," ";" rest "${arguments}")
  execute_process(COMMAND ${VEDIFF} ${command} ${rest} RESULT_VARIABLE rc OUTPUT_VARIABLE stdout ERROR_VARIABLE err)
  string(STRIP "${err}" err)
  string(REGEX MATCHALL "\n" newlines "${err}")
  list(LENGTH newlines lines)
  set(problem "")
  if(NOT rc EQUAL 2)
    set(problem "exit ${rc}, not 2")
  elseif(NOT lines EQUAL 0)
    set(problem "more than one line on stderr")
  elseif(NOT err MATCHES "^vediff ${command}: ${expected}")
    set(problem "the message does not match '${expected}'")
  elseif(EXISTS ${out})
    set(problem "${out} was written")
  endif()
  if(problem)
    message(SEND_ERROR "vediff ${command} ${rest}: ${problem}\n  stderr: ${err}")
    math(EXPR failures "${failures} + 1")
    file(REMOVE_RECURSE ${out})
  else()
    message(STATUS "ok: vediff ${command} ${rest} -> ${err}")
  endif()
endforeach()
# A flag name that means different things in two subcommands is checked as each means it: eval's
# --samples is a directory (toy's a count, above), so a directory passes the table and eval goes on
# to its own check of what the directory holds.
execute_process(COMMAND ${VEDIFF} eval --samples ${WORK}/a_directory --out ${out} RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "a_directory/samples.safetensors: no such file")
  message(SEND_ERROR "vediff eval --samples <a directory>: exit ${rc}, expected its samples.safetensors to be looked for\n  stderr: ${err}")
  math(EXPR failures "${failures} + 1")
endif()
list(LENGTH cases total)
if(failures GREATER 0)
  message(FATAL_ERROR "${failures} of ${total} bad command lines were not answered as expected")
endif()
message(STATUS "all ${total} bad command lines answered with exit code 2, one named line, nothing written")
