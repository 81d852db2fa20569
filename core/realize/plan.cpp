#include "realize/plan.hpp"

#include <exception>

namespace labctl::realize {

void Plan::run() {
    std::size_t begun = 0;
    try {
        for (; begun < steps_.size(); ++begun) steps_[begun].run();
    } catch (...) {
        auto original = std::current_exception();
        for (std::size_t i = std::min(begun + 1, steps_.size()); i-- > 0;) {
            if (!steps_[i].undo) continue;
            try {
                steps_[i].undo();
            } catch (const std::exception& e) {
                undo_errors_.push_back("undoing " + steps_[i].what + ": " + e.what());
            }
        }
        std::rethrow_exception(original);
    }
}

}  // namespace labctl::realize
