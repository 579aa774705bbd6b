# python_install_test: installs the `python` component into PREFIX and
# imports shmlane (extension, exceptions, control stubs) from there, with
# the build tree off the path. Fails with what went wrong.
file(REMOVE_RECURSE ${PREFIX})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --component python
                        --prefix ${PREFIX}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install --component python failed: ${out}${err}")
endif()
foreach(f __init__.py _errors.py control.py _shmlane.pyi py.typed v1/control_pb2.py
          v1/control_pb2_grpc.py)
  if(NOT EXISTS ${PREFIX}/${SITE}/shmlane/${f})
    message(FATAL_ERROR "not installed: ${PREFIX}/${SITE}/shmlane/${f}")
  endif()
endforeach()
set(code "import shmlane, shmlane.control, sys
assert shmlane.__file__.startswith('${PREFIX}/'), shmlane.__file__
assert issubclass(shmlane.Closed, shmlane.Error)
assert shmlane.Producer.write.__doc__
print('installed shmlane', shmlane.__version__, 'at', shmlane.__file__)")
execute_process(COMMAND ${CMAKE_COMMAND} -E env PYTHONPATH=${PREFIX}/${SITE}
                        ${PYTHON} -c "${code}"
  WORKING_DIRECTORY ${PREFIX}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "importing the installed package failed: ${out}${err}")
endif()
message(STATUS "${out}")
file(REMOVE_RECURSE ${PREFIX})
