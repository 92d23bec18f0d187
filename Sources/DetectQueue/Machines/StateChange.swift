/// A change from one state to another, as the state machines make them and the schema's transition tables
/// list them.
package struct StateChange<State: RawRepresentable & Hashable & Sendable>: Hashable, Sendable, CustomStringConvertible
where State.RawValue == String {
    package let from: State
    package let to: State

    package init(_ from: State, _ to: State) {
        self.from = from
        self.to = to
    }

    package var description: String { "\(from.rawValue) → \(to.rawValue)" }
}

extension RequestStateMachine {
    /// Every change of state the machine can make.
    package static let stateChanges: Set<StateChange<RequestState>> = Set(RequestState.allCases.flatMap { state in
        RequestEvent.everyKind.flatMap { event in
            [true, false].compactMap { attemptsLeft in
                (try? transition(from: state, on: event, attemptsLeft: attemptsLeft)).flatMap { $0.changesState ? StateChange($0.from, $0.to) : nil }
            }
        }
    })
}

extension PostTaskStateMachine {
    /// Every change of state the machine can make, as `from → to` pairs.
    package static let stateChanges: Set<StateChange<PostTask.State>> = Set(PostTask.State.allCases.flatMap { state in
        PostTaskEvent.everyKind.flatMap { event in
            [true, false].compactMap { attemptsLeft in
                (try? transition(from: state, on: event, attemptsLeft: attemptsLeft)).flatMap { $0.from == $0.to ? nil : StateChange($0.from, $0.to) }
            }
        }
    })
}
