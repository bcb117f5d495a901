# Finds cuDNN (cudnn.h and libcudnn, which the cuda backend's convolutions call) and makes the
# imported target vediff::cudnn, which vediff::cuda links. Looked for under CUDNN_ROOT (the CMake
# or environment variable) and then beside the CUDA toolkit (CUDAToolkit must be found first).
# Included by vediff's own build and by its installed package (vediffConfig.cmake), so a
# downstream project finds cuDNN the same way. Sets VEDIFF_CUDNN_FOUND.
if(NOT TARGET vediff::cudnn)
  find_path(VEDIFF_CUDNN_INCLUDE_DIR cudnn.h
    HINTS ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  find_library(VEDIFF_CUDNN_LIBRARY cudnn
    HINTS ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES lib64 lib)
  if(VEDIFF_CUDNN_INCLUDE_DIR AND VEDIFF_CUDNN_LIBRARY)
    add_library(vediff::cudnn UNKNOWN IMPORTED)
    set_target_properties(vediff::cudnn PROPERTIES
      IMPORTED_LOCATION "${VEDIFF_CUDNN_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${VEDIFF_CUDNN_INCLUDE_DIR}")
  endif()
endif()
if(TARGET vediff::cudnn)
  set(VEDIFF_CUDNN_FOUND TRUE)
else()
  set(VEDIFF_CUDNN_FOUND FALSE)
endif()
