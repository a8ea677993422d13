# One build unit per driver folder (src/protocol/<name>/, src/format/<name>/,
# src/filter/<name>/): each folder is an OBJECT library of its own with its
# own optional dependency, so that adding a driver is adding a folder.
#
# Drivers register themselves from static initialisers (QIMG_REGISTER_DRIVER)
# and nothing names them, so their objects must be linked whole: every driver
# object library is listed in the INTERFACE library qimg_formats (shipped
# drivers) or qimg_test_formats (TEST_ONLY drivers) as $<TARGET_OBJECTS:...>,
# and executables link those. A static archive would let the linker drop them.
#
# A folder with a CMakeLists.txt describes itself with qimg_add_driver(); a
# folder without one is a driver of all its *.cpp files with no dependency
# beyond the shared layers (so that a plain folder works as it did when one
# glob collected every driver).

# qimg_add_driver(<name>
#     SOURCES <file>...            the driver's sources (relative to its folder)
#     [LIBS <target>...]           libraries it links (imported targets)
#     [PACKAGE <name>]             find_package(<name>) first; left out if not found
#     [PKG_CONFIG <module>...]     pkg-config modules, linked as PkgConfig::<module>
#     [TEST_ONLY]                  built only with -DQIMG_TEST_FORMATS=ON, never
#                                  into the shipped qimg (see docs/adding-a-format.md)
#     [FUZZ]                       a format whose images are fuzzed: fuzz_<name>
#                                  from tests/fuzz/fuzz_format.cpp
#     [UNIT_TESTS <file>...])      GoogleTest sources added to qimg_unit_tests
#
# A driver whose package is missing, or turned off with -DQIMG_DRIVER_<NAME>=OFF,
# is left out of the build (and so out of `qimg --help`) with one configure line.
function(qimg_add_driver name)
  cmake_parse_arguments(PARSE_ARGV 1 D "TEST_ONLY;FUZZ" "PACKAGE" "SOURCES;LIBS;PKG_CONFIG;UNIT_TESTS")
  string(TOUPPER "${name}" upper)
  string(MAKE_C_IDENTIFIER "${upper}" upper)
  string(MAKE_C_IDENTIFIER "${name}" ident)
  if(D_TEST_ONLY AND NOT QIMG_TEST_FORMATS)
    return()  # silently: test formats are off in every shipped build
  endif()
  option(QIMG_DRIVER_${upper} "Build the ${name} driver when its dependencies are found" ON)
  if(NOT QIMG_DRIVER_${upper})
    message(STATUS "qimg: driver ${name} left out (QIMG_DRIVER_${upper}=OFF)")
    return()
  endif()
  set(libs ${D_LIBS})
  if(D_PACKAGE)
    find_package(${D_PACKAGE} QUIET)
    if(NOT ${D_PACKAGE}_FOUND)
      message(STATUS "qimg: driver ${name} left out (${D_PACKAGE} not found)")
      return()
    endif()
  endif()
  foreach(module ${D_PKG_CONFIG})
    string(MAKE_C_IDENTIFIER "QIMG_PC_${module}" var)
    pkg_check_modules(${var} QUIET IMPORTED_TARGET ${module})
    if(NOT ${var}_FOUND)
      message(STATUS "qimg: driver ${name} left out (${module} not found)")
      return()
    endif()
    list(APPEND libs PkgConfig::${var})
  endforeach()

  set(target qimg_driver_${ident})
  add_library(${target} OBJECT ${D_SOURCES})
  target_link_libraries(${target} PUBLIC qimg_block qimg_crypto qimg_codec ${libs})
  if(D_TEST_ONLY)
    set(group qimg_test_formats)
  else()
    set(group qimg_formats)
  endif()
  target_sources(${group} INTERFACE $<TARGET_OBJECTS:${target}>)
  # The objects' own link dependencies (libnbd, libcurl...), without linking
  # the objects a second time.
  target_link_libraries(${group} INTERFACE qimg_block qimg_crypto qimg_codec ${libs})
  set_property(GLOBAL APPEND PROPERTY QIMG_DRIVERS ${name})
  if(D_FUZZ)
    set_property(GLOBAL APPEND PROPERTY QIMG_FUZZ_FORMATS ${name})
  endif()
  foreach(t ${D_UNIT_TESTS})
    get_filename_component(t "${t}" ABSOLUTE)
    set_property(GLOBAL APPEND PROPERTY QIMG_DRIVER_UNIT_TESTS ${t})
  endforeach()
endfunction()

# Adds every driver folder under the given kinds (protocol, format, filter).
function(qimg_discover_drivers)
  foreach(kind ${ARGN})
    file(GLOB dirs LIST_DIRECTORIES true CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/${kind}/*)
    list(SORT dirs)
    foreach(dir ${dirs})
      if(NOT IS_DIRECTORY ${dir})
        continue()
      endif()
      if(EXISTS ${dir}/CMakeLists.txt)
        add_subdirectory(${dir})
      else()
        get_filename_component(name ${dir} NAME)
        file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${dir}/*.cpp)
        if(srcs)
          qimg_add_driver(${name} SOURCES ${srcs})
        endif()
      endif()
    endforeach()
  endforeach()
endfunction()
