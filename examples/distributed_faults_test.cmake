# Data-parallel runs that lose a rank (mpirun -np 2 vediff train-dit, with VEDIFF_FAULT of
# train/loop.hpp). Variables: MPIEXEC, VEDIFF (the vediff program), WORK.
#  1. Rank 1 is killed (SIGKILL) at step 12: the job ends with an error that names rank 1; the
#     checkpoint of step 10 is intact, and `--resume` on two ranks continues the trajectory of
#     the uninterrupted two-rank run exactly (same world size, same order of sums).
#  2. Rank 1 hangs (SIGSTOP) at step 7: rank 0 ends the job within --comm-timeout (3 s) plus
#     start-up, naming rank 1 and the step; the checkpoint of step 5 resumes (in one process).
#  3. A command that runs in one process (sample) refuses to run as two MPI ranks.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(ENV{OMPI_ALLOW_RUN_AS_ROOT} 1)
set(ENV{OMPI_ALLOW_RUN_AS_ROOT_CONFIRM} 1)
set(ENV{OMPI_MCA_rmaps_base_oversubscribe} 1)
set(ENV{OMP_NUM_THREADS} 1)

function(run what expect_success)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(output "${out}\n${err}" PARENT_SCOPE)
  if(expect_success AND NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  elseif(NOT expect_success AND rc EQUAL 0)
    message(FATAL_ERROR "${what} succeeded, but a rank was lost:\n${out}\n${err}")
  endif()
endfunction()

run("the tokenizer" TRUE ${VEDIFF} train-tokenizer --ch 32 --ch-mult 1,2 --norm-groups 8 --z-channels 4 --batch 4 --steps 2
    --warmup 1 --eval-images 10 --out ${WORK}/tokenizer)
run("encoding the latents" TRUE ${VEDIFF} encode --tokenizer ${WORK}/tokenizer --max-images 128 --out ${WORK}/latents.safetensors)
set(common --latents ${WORK}/latents.safetensors --hidden 32 --depth 2 --heads 2 --patch 2 --batch 8 --steps 20 --warmup 2
           --log-every 1 --checkpoint-every 5 --seed 7)
set(two_ranks ${MPIEXEC} -np 2)

# 1. Killed.
run("the uninterrupted two-rank run" TRUE ${two_ranks} ${VEDIFF} train-dit ${common} --out ${WORK}/straight)
set(ENV{VEDIFF_FAULT} kill:1:12)
run("the run whose rank 1 is killed" FALSE ${two_ranks} ${VEDIFF} train-dit ${common} --out ${WORK}/killed)
unset(ENV{VEDIFF_FAULT})
if(NOT output MATCHES "rank 1[^\n]*(signal 9|Killed)")
  message(FATAL_ERROR "the killed run's error does not name rank 1 and the signal:\n${output}")
endif()
run("resuming the killed run on two ranks" TRUE ${two_ranks} ${VEDIFF} train-dit --out ${WORK}/killed --resume --log-every 1
    --checkpoint-every 5)
if(NOT output MATCHES "resumed from [^\n]* at step 10")
  message(FATAL_ERROR "the killed run did not resume from its checkpoint of step 10:\n${output}")
endif()
file(READ ${WORK}/straight/log.jsonl straight)
file(READ ${WORK}/killed/log.jsonl resumed)
if(NOT straight STREQUAL resumed)
  message(FATAL_ERROR "the resumed two-rank log differs from the uninterrupted one:\n${straight}\n---\n${resumed}")
endif()

# 2. Hung.
set(ENV{VEDIFF_FAULT} hang:1:7)
string(TIMESTAMP start %s)
run("the run whose rank 1 hangs" FALSE ${two_ranks} ${VEDIFF} train-dit ${common} --out ${WORK}/hung --comm-timeout 3)
string(TIMESTAMP end %s)
unset(ENV{VEDIFF_FAULT})
math(EXPR seconds "${end} - ${start}")
# Rank 1 stops before step 7: the first collective of that step it misses is its backward's
# gradient all-reduce (the loss's all-reduce comes later, when the loop reads the step's report).
if(NOT output MATCHES "rank 0 of 2: rank 1 did not reach the backward of step 7 within 3 s")
  message(FATAL_ERROR "the hung run's error does not name rank 1 and step 7:\n${output}")
endif()
if(seconds GREATER 60)
  message(FATAL_ERROR "the hung run took ${seconds} s to end with a 3 s timeout")
endif()
run("resuming the hung run in one process" TRUE ${VEDIFF} train-dit --out ${WORK}/hung --resume --log-every 1)
if(NOT output MATCHES "resumed from [^\n]* at step 5")
  message(FATAL_ERROR "the hung run did not resume from its checkpoint of step 5:\n${output}")
endif()
# 3. A one-process command under mpirun is refused, not run twice into the same files.
run("sampling under mpirun" FALSE ${two_ranks} ${VEDIFF} sample --dit ${WORK}/straight --per-class 1 --steps 2 --no-classifier
    --out ${WORK}/samples)
if(NOT output MATCHES "runs in one process" OR EXISTS ${WORK}/samples/samples.png)
  message(FATAL_ERROR "sample under mpirun was not refused:\n${output}")
endif()
message(STATUS "killed rank: named, resumed exactly; hung rank: named after ${seconds} s, resumed; one-process command refused")
