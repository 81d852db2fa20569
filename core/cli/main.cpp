#include <iostream>

int main() {
    std::cout << "labctl " LABCTL_VERSION "\n";
    return 0;
}
