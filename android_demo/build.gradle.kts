// Versions (the same set llama.cpp's own examples/llama.android builds with, in the pinned
// llama.cpp 0.3.36 tree): Android Gradle Plugin 8.13.2, Kotlin 2.3.0, Gradle 8.14.3
// (gradle/wrapper/gradle-wrapper.properties), JDK 17+ to run Gradle. NDK and CMake
// versions are in app/build.gradle.kts.
plugins {
    id("com.android.application") version "8.13.2" apply false
    id("org.jetbrains.kotlin.android") version "2.3.0" apply false
}
