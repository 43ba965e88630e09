import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// The pinned llama.cpp tree (never committed). `finllm-edge native fetch` puts it in
// ~/.cache/finllm-edge/src/llama.cpp-0.3.36; override with -Pfinllm.llamaSrc=... or
// FINLLM_LLAMA_SRC=... . src/main/cpp/CMakeLists.txt fails with instructions if missing.
val llamaSrc: String = (findProperty("finllm.llamaSrc") as String?)
    ?: System.getenv("FINLLM_LLAMA_SRC")
    ?: "${System.getProperty("user.home")}/.cache/finllm-edge/src/llama.cpp-0.3.36"

android {
    namespace = "io.finllm.demo"
    compileSdk = 36
    // NDK r27c (LTS). Any NDK r26+ works: change this line to the one you have installed.
    ndkVersion = "27.2.12479018"

    defaultConfig {
        applicationId = "io.finllm.demo"
        minSdk = 28
        targetSdk = 36
        versionCode = 1
        versionName = "0.1.0"

        ndk {
            // llama.cpp's ARM kernels are the point of this app; 32-bit ARM and x86 are not built.
            abiFilters += listOf("arm64-v8a")
        }
        externalNativeBuild {
            cmake {
                // Release flags even in debug APKs: a -O0 llama.cpp is ~10x slower.
                arguments += listOf(
                    "-DCMAKE_BUILD_TYPE=Release",
                    "-DANDROID_STL=c++_static",
                    "-DFE_LLAMA_SRC=$llamaSrc",
                )
                // Both CPU variants go into the APK; FinLlm.loadLibrary() picks one at run time.
                targets += listOf("finllm_jni_dotprod", "finllm_jni_armv8")
            }
        }
    }

    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = "3.31.6"
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
            // Demo app: sign release builds with the debug key so `assembleRelease` installs.
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    packaging {
        jniLibs {
            // Keep the .so files uncompressed and page-aligned in the APK (mapped in place).
            useLegacyPackaging = false
        }
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    implementation("androidx.activity:activity-ktx:1.12.2")
    implementation("androidx.lifecycle:lifecycle-viewmodel-ktx:2.8.7")
    implementation("androidx.lifecycle:lifecycle-livedata-ktx:2.8.7")
}
