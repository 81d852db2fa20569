// userns/: the pure parts (where a user's state lives, which setting disables user
// namespaces). Joining a keeper is tested end to end, as another uid, in
// tests/py/test_rootless.py.
#include "userns/userns.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;
using labctl::userns::default_state_root;
using labctl::userns::disabling_setting;

class FakeProc : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/userns-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { fs::remove_all(dir_); }
    void set(const std::string& rel, const std::string& value) {
        fs::create_directories(fs::path(dir_ + "/sys/" + rel).parent_path());
        std::ofstream(dir_ + "/sys/" + rel) << value << "\n";
    }
    std::string dir_;
};

TEST_F(FakeProc, NothingDisablesThemWhenNoSettingIsThereOrAllAllow) {
    EXPECT_FALSE(disabling_setting(dir_).has_value());
    set("kernel/unprivileged_userns_clone", "1");
    set("user/max_user_namespaces", "15000");
    set("kernel/apparmor_restrict_unprivileged_userns", "0");
    EXPECT_FALSE(disabling_setting(dir_).has_value());
}

TEST_F(FakeProc, EachSettingIsNamedWithHowToAllow) {
    set("user/max_user_namespaces", "0");
    auto s = disabling_setting(dir_);
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->rfind("user.max_user_namespaces=0 (allow them: sysctl -w user.max_user_namespaces=", 0), 0u) << *s;
    set("user/max_user_namespaces", "10");
    set("kernel/unprivileged_userns_clone", "0");
    s = disabling_setting(dir_);
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->rfind("kernel.unprivileged_userns_clone=0", 0), 0u) << *s;
    set("kernel/unprivileged_userns_clone", "1");
    set("kernel/apparmor_restrict_unprivileged_userns", "1");
    s = disabling_setting(dir_);
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->rfind("kernel.apparmor_restrict_unprivileged_userns=1", 0), 0u) << *s;
}

TEST(DefaultStateRoot, XdgRuntimeDirElseTmpPerUid) {
    const char* saved = ::getenv("XDG_RUNTIME_DIR");
    std::string keep = saved ? saved : "";
    ::setenv("XDG_RUNTIME_DIR", "/run/user/1000/", 1);
    EXPECT_EQ(default_state_root(1000), "/run/user/1000/labctl");
    ::setenv("XDG_RUNTIME_DIR", "relative", 1);  // not absolute: not used
    EXPECT_EQ(default_state_root(1000), "/tmp/labctl-1000");
    ::unsetenv("XDG_RUNTIME_DIR");
    EXPECT_EQ(default_state_root(4242), "/tmp/labctl-4242");
    if (saved) ::setenv("XDG_RUNTIME_DIR", keep.c_str(), 1);
}

}  // namespace
